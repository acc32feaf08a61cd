"""SNIP (Lee et al. 2019): one-shot pruning at W0 by connection sensitivity, evaluated without retraining."""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import ConfigError
from ..lottery.pruning import Scores, keep_top, register_criterion
from .common import levels, on_device, to_device

if TYPE_CHECKING:
    from ..config import Params
    from .config import SnipCfg


@register_criterion("snip")
def snip_scores(trained: Mapping[str, torch.Tensor] | None, initial: Mapping[str, torch.Tensor] | None,
                names: list[str], *, model: nn.Module | None = None, batches: Iterable | None = None,
                loss_fn: Callable | None = None, **_) -> Scores:
    """Connection sensitivity |dL/dw * w| at the initial weights, gradient averaged over ``batches``.

    ``trained`` is ignored: SNIP prunes before training. ``initial`` (if given) is loaded into ``model``
    first. Batches go to the model's device. Eval mode, so dropout noise does not enter the scores and they
    are reproducible. SNIP's normalisation by the sum of all scores does not change the ranking and is left out.
    """
    if model is None or batches is None or loss_fn is None:
        raise ConfigError("criterion 'snip' needs model, batches and loss_fn: it is a baseline "
                          "(baselines.methods), not a lottery-ticket prune.criterion")
    if initial is not None:
        model.load_state_dict(dict(initial))
    device = next(model.parameters()).device
    model.eval()
    model.zero_grad(set_to_none=True)
    n = 0
    for x, y in on_device(batches, device):
        loss_fn(model(x), y).backward()
        n += 1
    if n == 0:
        raise ConfigError("SNIP got no training batches; the train split is empty")
    params = dict(model.named_parameters())
    scores = {name: (params[name].grad / n * params[name]).abs().detach() for name in names}
    model.zero_grad(set_to_none=True)
    return scores


def snip_masks(params: Params, seed: int, cfg: SnipCfg, device: torch.device) -> tuple[dict, list[tuple[int, dict]]]:
    """W0 of the source scenario (CPU) and the one-shot global SNIP mask at every LT level (on ``device``)."""
    from .. import io
    from ..lottery.runner import build, train_loader
    from ..paths import round_paths
    from ..lottery.losses import ClassDependentLoss
    from ..lottery.masks import full_mask

    w0 = io.load_torch(round_paths(params, params.baselines.source_scenario, seed, 0).weights)
    model = build(params, seed, device=device)
    loader = train_loader(params, seed=seed, device=device)
    batches = itertools.islice(loader, cfg.batches)
    full = full_mask(model, params.prune.include_biases, params.prune.ignore)
    scores = snip_scores(None, w0, list(full), model=model, batches=batches,
                         loss_fn=ClassDependentLoss([1.0, 1.0]).to(device))
    return w0, [(k, to_device(keep_top(scores, full, keep, "global"), device)) for k, keep in levels(params)]


def snip(params: Params, seed: int, device: torch.device) -> list[dict]:
    """W0 pruned by SNIP, evaluated untrained (the paper's "SNIP")."""
    from ..evaluation.evaluate import evaluate_model
    from ..lottery.runner import build
    from ..lottery.masks import apply_mask

    w0, masks = snip_masks(params, seed, params.baselines.snip, device)
    model, out = build(params, seed, device=device), []
    for k, mask in masks:
        model.load_state_dict(w0)
        apply_mask(model, mask)
        out.append({"round": k, **evaluate_model(params, model, mask, w0)})
    return out
