"""SNIP with retraining: the SNIP mask on W0, then trained with the mask fixed."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .snip import snip_masks

if TYPE_CHECKING:
    from ..config import Params


def snip_trained(params: Params, seed: int, device: torch.device) -> list[dict]:
    """SNIP mask on W0, then trained with the mask fixed for one LT round's iterations, with plain CE
    (``baselines.snip_trained.loss: ce``, the paper's) or a scenario's class-dependent loss of round k."""
    from .. import pipeline
    from ..data.loader import class_counts
    from ..losses import ClassDependentLoss, resolve_gamma
    from ..train import train_masked

    cfg = params.baselines.snip_trained
    w0, masks = snip_masks(params, seed, cfg, device)
    model, t, out = pipeline.build(params, seed, device=device), params.train, []
    for k, mask in masks:
        if cfg.loss == "ce":
            loss = ClassDependentLoss([1.0, 1.0]).to(device)
        else:
            sc = params.scenarios[cfg.loss]
            gamma = resolve_gamma(sc.gamma(k), class_counts(pipeline.CACHE, "train"))
            loss = ClassDependentLoss(gamma, sc.lam, t.margin).to(device)
        model.load_state_dict(w0)  # every level starts from W0; train_masked makes a fresh optimizer
        torch.manual_seed(seed * 1000 + k)  # dropout, as in the LT round k
        loader = pipeline._loader(params, "train", train=True, seed=seed * 1000 + k, device=device)
        losses = train_masked(model, mask, loader, loss, t.iterations, **t.sgd(),
                              desc=f"snip_trained level {k}")
        out.append({"round": k, "final_loss": losses[-1], **pipeline.evaluate_model(params, model, mask)})
    return out
