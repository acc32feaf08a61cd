"""Lottery-ticket pruning: score weights, keep the best of the survivors, rewind survivors to W0.

Criteria live in a registry so baselines can add theirs (SNIP, L-OBS); every criterion maps
``{name: tensor}`` to ``{name: score}``, higher meaning "keep". Selection is one partial sort per tensor
(``layerwise``) or over the concatenation (``global``): no per-element Python loops.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch

from .masks import Mask, masked

Scores = dict[str, torch.Tensor]
Criterion = Callable[..., Scores]
CRITERIA: dict[str, Criterion] = {}
SCOPES = ("layerwise", "global")


def register_criterion(name: str) -> Callable[[Criterion], Criterion]:
    def deco(fn: Criterion) -> Criterion:
        CRITERIA[name] = fn
        return fn
    return deco


@register_criterion("magnitude_increase")
def magnitude_increase(trained: Mapping[str, torch.Tensor], initial: Mapping[str, torch.Tensor],
                       names: list[str], **_) -> Scores:
    """|W_k| - |W0| (Zhou et al. 2019): weights that grew most during training are kept."""
    return {n: trained[n].abs() - initial[n].abs() for n in names}


@register_criterion("magnitude")
def magnitude(trained: Mapping[str, torch.Tensor], initial: Mapping[str, torch.Tensor] | None,
              names: list[str], **_) -> Scores:
    return {n: trained[n].abs() for n in names}


def get_criterion(name: str) -> Criterion:
    try:
        return CRITERIA[name]
    except KeyError:
        raise ValueError(f"unknown pruning criterion {name!r}; allowed: {', '.join(sorted(CRITERIA))}") from None


def _count(mask: torch.Tensor) -> int:
    """Set entries of a bool mask (numpy counts bools several times faster than ``Tensor.sum``)."""
    return int(np.count_nonzero(mask.cpu().numpy()))


def _n_keep(n_remaining: int, keep: float, min_keep: int) -> int:
    return min(n_remaining, max(min_keep, round(n_remaining * keep)))


def _top_mask(scores: torch.Tensor, eligible: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the k highest scores among eligible entries.

    numpy's introselect (argpartition) finds them several times faster than ``torch.topk`` with k in the
    millions on CPU; ties at the threshold are broken deterministically.
    """
    flat = scores.detach().reshape(-1).cpu().numpy()
    where = eligible.reshape(-1).cpu().numpy()
    out = np.zeros(flat.size, dtype=bool)
    if k > 0:
        positions = None if where.all() else np.flatnonzero(where)
        candidates = flat if positions is None else flat[positions]
        k = min(k, candidates.size)
        top = np.argpartition(candidates, candidates.size - k)[candidates.size - k:]
        out[top if positions is None else positions[top]] = True
    return torch.from_numpy(out).reshape(scores.shape)


def keep_top(scores: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor], keep: float,
             scope: str = "layerwise", min_keep: int = 1) -> Mask:
    """Keep the fraction ``keep`` of the weights still in ``mask`` with the highest scores.

    ``min_keep`` weights of every tensor always survive, so no layer is cut off entirely (in the global
    scope the best survivor of an emptied tensor is restored, overshooting by at most one per tensor).
    """
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep fraction must be in (0, 1], got {keep}")
    if scope == "layerwise":
        return {n: _top_mask(scores[n], m, _n_keep(_count(m), keep, min_keep)) for n, m in mask.items()}
    if scope != "global":
        raise ValueError(f"unknown pruning scope {scope!r}; allowed: {', '.join(SCOPES)}")
    names = list(mask)
    flat_scores = torch.cat([scores[n].reshape(-1).to(torch.float32) for n in names])
    flat_mask = torch.cat([mask[n].reshape(-1) for n in names])
    kept = _top_mask(flat_scores, flat_mask, _n_keep(_count(flat_mask), keep, 0))
    out, start = {}, 0
    for n in names:
        size = mask[n].numel()
        part = kept[start:start + size].reshape(mask[n].shape).clone()
        start += size
        floor = min(min_keep, _count(mask[n]))
        if _count(part) < floor:
            part |= _top_mask(scores[n], mask[n], floor)
        out[n] = part
    return out


def prune(trained: Mapping[str, torch.Tensor], initial: Mapping[str, torch.Tensor], mask: Mask,
          rate: float, scope: str = "layerwise", criterion: str = "magnitude_increase",
          layer_rates: Mapping[str, float] | None = None, **ctx) -> Mask:
    """Prune ``rate`` of the remaining weights by ``criterion``; masks only ever shrink.

    ``layer_rates`` prunes the named tensors at their own rate, each on its own, outside the global pool:
    Frankle & Carbin prune the output layer at half the rate so that a tiny layer does not become the
    bottleneck. A tensor left out of ``mask`` is never pruned (open_lth's ``pruning_layers_to_ignore``).
    """
    rates = dict(layer_rates or {})
    for r in (rate, *rates.values()):
        if not 0.0 < r < 1.0:
            raise ValueError(f"prune rate must be in (0, 1), got {r}")
    unknown = sorted(set(rates) - set(mask))
    if unknown:
        raise ValueError(f"prune.layer_rates names tensor(s) {unknown} that are not pruned; pruned: {', '.join(mask)}")
    scores = get_criterion(criterion)(trained, initial, list(mask), **ctx)
    pooled = {n: m for n, m in mask.items() if n not in rates}
    out = keep_top(scores, pooled, 1.0 - rate, scope) if pooled else {}
    for n, r in rates.items():
        out |= keep_top({n: scores[n]}, {n: mask[n]}, 1.0 - r, "layerwise")
    return {n: out[n] for n in mask}


def rewind(initial: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """W0 with pruned entries set to 0: the start of the next round."""
    return {n: masked(t, mask[n]) if n in mask else t.clone() for n, t in initial.items()}
