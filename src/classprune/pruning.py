"""Lottery-ticket pruning: score weights, keep the best of the survivors, rewind survivors to W0.

Criteria live in a registry so baselines can add theirs (SNIP, L-OBS); every criterion maps
``{name: tensor}`` to ``{name: score}``, higher meaning "keep". Selection is one ``topk`` per tensor
(``layerwise``) or over the concatenation (``global``): no per-element Python loops.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from .masks import Mask

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


def _n_keep(n_remaining: int, keep: float, min_keep: int) -> int:
    return min(n_remaining, max(min_keep, round(n_remaining * keep)))


def _top_mask(scores: torch.Tensor, eligible: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the k highest scores among eligible entries."""
    flat = torch.where(eligible.reshape(-1), scores.reshape(-1), -torch.inf)
    out = torch.zeros(flat.numel(), dtype=torch.bool)
    if k > 0:
        out[torch.topk(flat, k, sorted=False).indices] = True
    return out.reshape(scores.shape)


def keep_top(scores: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor], keep: float,
             scope: str = "layerwise", min_keep: int = 1) -> Mask:
    """Keep the fraction ``keep`` of the weights still in ``mask`` with the highest scores.

    ``min_keep`` weights of every tensor always survive, so no layer is cut off entirely (in the global
    scope the best survivor of an emptied tensor is restored, overshooting by at most one per tensor).
    """
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep fraction must be in (0, 1], got {keep}")
    if scope == "layerwise":
        return {n: _top_mask(scores[n], m, _n_keep(int(m.sum()), keep, min_keep)) for n, m in mask.items()}
    if scope != "global":
        raise ValueError(f"unknown pruning scope {scope!r}; allowed: {', '.join(SCOPES)}")
    names = list(mask)
    flat_scores = torch.cat([scores[n].reshape(-1).to(torch.float32) for n in names])
    flat_mask = torch.cat([mask[n].reshape(-1) for n in names])
    kept = _top_mask(flat_scores, flat_mask, _n_keep(int(flat_mask.sum()), keep, 0))
    out, start = {}, 0
    for n in names:
        size = mask[n].numel()
        part = kept[start:start + size].reshape(mask[n].shape).clone()
        start += size
        if min_keep and int(part.sum()) < min(min_keep, int(mask[n].sum())):
            part |= _top_mask(scores[n], mask[n], min(min_keep, int(mask[n].sum())))
        out[n] = part
    return out


def prune(trained: Mapping[str, torch.Tensor], initial: Mapping[str, torch.Tensor], mask: Mask,
          rate: float, scope: str = "layerwise", criterion: str = "magnitude_increase", **ctx) -> Mask:
    """Prune ``rate`` of the remaining weights by ``criterion``; masks only ever shrink."""
    if not 0.0 < rate < 1.0:
        raise ValueError(f"prune rate must be in (0, 1), got {rate}")
    scores = get_criterion(criterion)(trained, initial, list(mask), **ctx)
    return keep_top(scores, mask, 1.0 - rate, scope)


def rewind(initial: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """W0 with pruned entries set to 0: the start of the next round."""
    state = {n: t.clone() for n, t in initial.items()}
    for n, m in mask.items():
        state[n].mul_(m)
    return state
