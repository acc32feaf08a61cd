"""SNIP with retraining: the SNIP mask on W0, then trained with the mask fixed."""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch

from .snip import snip_masks

if TYPE_CHECKING:
    from ..config import Params


def snip_trained(params: Params, seed: int, device: torch.device) -> list[dict]:
    """SNIP mask on W0, then trained with the mask fixed for one LT round's iterations, with plain CE
    (``baselines.snip_trained.loss: ce``, the paper's) or a scenario's class-dependent loss of round k."""
    from ..evaluation.evaluate import evaluate_model
    from ..lottery.losses import ClassDependentLoss
    from ..lottery.runner import build, round_seed, scenario_loss, train_loader
    from ..lottery import trainlog
    from ..lottery.train import sgd, train_masked

    cfg = params.baselines.snip_trained
    w0, masks = snip_masks(params, seed, cfg, device)
    model, t, out = build(params, seed, device=device), params.train, []
    for k, mask in masks:
        loss = (ClassDependentLoss([1.0, 1.0]).to(device) if cfg.loss == "ce"
                else scenario_loss(params, cfg.loss, k, device)[0])
        model.load_state_dict(w0)  # every level starts from W0; train_masked makes a fresh optimizer
        torch.manual_seed(round_seed(seed, k))  # dropout, as in the LT round k
        loader = train_loader(params, seed=round_seed(seed, k), device=device)
        with contextlib.nullcontext() if (log := trainlog.level(k)) is None else log:
            losses = train_masked(model, mask, loader, loss, t.iterations, **sgd(t),
                                  desc=f"snip_trained level {k}", log=log)
        out.append({"round": k, "final_loss": losses[-1], **evaluate_model(params, model, mask, w0)})
    return out
