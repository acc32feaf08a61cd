"""How a channel ticket chooses the channels it prunes: a registry of criteria (as open_lth's pruning
strategies), each scoring the live channels of the *compact* network (the ticket as it would ship) with
Torch-Pruning's importances, and :func:`prune_channels`, one round of it."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from .channels import Unit, alive, channel_mask, compact, coupled_group, dependency_graph
from .masks import Mask
from .pruning import keep_top

# --- criteria: {layer: score per channel of the compact network}, higher meaning "keep" ---
ChannelCriterion = Callable[..., dict[str, torch.Tensor]]
CHANNEL_CRITERIA: dict[str, ChannelCriterion] = {}


def register(name: str) -> Callable[[ChannelCriterion], ChannelCriterion]:
    def deco(fn: ChannelCriterion) -> ChannelCriterion:
        CHANNEL_CRITERIA[name] = fn
        return fn
    return deco


def _importance(importance, small: nn.Module, layers: Sequence[str], image_size: int) -> dict[str, torch.Tensor]:
    graph = dependency_graph(small, image_size)
    modules = dict(small.named_modules())
    out = {}
    for name in layers:
        group = coupled_group(graph, modules[name], range(modules[name].out_channels))
        out[name] = importance(group).detach().to(torch.float64)
    return out


def _magnitude(p: int, reduction: str) -> ChannelCriterion:
    """Torch-Pruning's GroupMagnitudeImportance; in the global scope each layer's scores are divided by
    their mean (its ``normalizer='mean'``), so that layers of different widths compare."""
    def score(small: nn.Module, layers: Sequence[str], image_size: int, scope: str, **_) -> dict[str, torch.Tensor]:
        import torch_pruning as tp

        imp = tp.importance.GroupMagnitudeImportance(p=p, group_reduction=reduction,
                                                     normalizer="mean" if scope == "global" else None)
        return _importance(imp, small, layers, image_size)
    return score


# Li et al. 2017: the L1 norm of the trained filter (the group's first member, the conv itself)
register("l1")(_magnitude(1, "first"))
# Torch-Pruning's default: the squared L2 norm over the group (filter and every slice reading it), averaged
register("l2_group")(_magnitude(2, "mean"))


@register("refill")
def refill(small: nn.Module, layers: Sequence[str], rate: float, scope: str, **_) -> dict[str, torch.Tensor]:
    """Chen et al. 2022 (IMP-Refill): prune the filters' weights unstructured by magnitude at the round's
    rate, then keep whole the channels with the most survivors (the share of the filter, so that layers of
    different filter sizes compare in the global scope; ties go to the larger L1 norm)."""
    modules = dict(small.named_modules())
    weights = {n: modules[n].weight.detach() for n in layers}
    survivors = keep_top({n: w.abs() for n, w in weights.items()},
                         {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}, 1.0 - rate, scope)
    out = {}
    for n, w in weights.items():
        share = survivors[n].flatten(1).double().mean(1)
        l1 = w.abs().flatten(1).double().sum(1)
        # A share step is at least 1 / filter size (>= 1 / 3456 in AlexNet): 1e-5 only breaks ties.
        out[n] = share + 1e-5 * l1 / l1.max().clamp_min(1e-30)
    return out


def get_channel_criterion(name: str) -> ChannelCriterion:
    try:
        return CHANNEL_CRITERIA[name]
    except KeyError:
        raise ConfigError(f"unknown prune.channel.criterion {name!r}; allowed: "
                          f"{', '.join(sorted(CHANNEL_CRITERIA))}") from None


def prune_channels(model: nn.Module, mask: Mask, unit_list: Sequence[Unit], rate: float, scope: str,
                   criterion: str, image_size: int) -> Mask:
    """Prune ``rate`` of the live channels of ``model`` (the trained round, masked) by ``criterion``; every
    layer keeps at least one channel. Returns the next round's weight mask."""
    if not 0.0 < rate < 1.0:
        raise ConfigError(f"prune.channel.rate must be in (0, 1), got {rate}")
    fn = get_channel_criterion(criterion)
    live = alive(mask, unit_list)
    small = compact(model, mask, unit_list, image_size)
    scores = fn(small, [u.layer for u in unit_list], image_size=image_size, rate=rate, scope=scope)
    full = {}
    for layer, s in scores.items():  # compact channel j is the j-th live channel of the full layer
        f = torch.full((live[layer].numel(),), -math.inf, dtype=torch.float64)
        f[live[layer]] = s
        full[layer] = f
    return channel_mask(keep_top(full, live, 1.0 - rate, scope), unit_list, mask)
