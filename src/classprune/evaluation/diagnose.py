"""Why a ticket dies: how much of W0's magnitude a mask keeps, and which units no longer fire.

A network that gives every image the same score (AUC exactly 0.5) is a bug to explain before it is a
result. Two causes are told apart here: the pretrained features lost (the mask removed most of W0's feature
magnitude, so the pooled features are zero for every image), a dead head (every ReLU unit of a head layer
is zero for every image, so the logits are the last biases) and an output layer cut from the live units.
``cause`` names the first that applies, in the order of the forward pass.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch import nn

# The activations watched, in the paper's small head wherever a network keeps it (classprune.models.registry):
# the pooled backbone features it reads (after ReLU and pooling, so >= 0) and its two ReLUs.
WATCHED = {"features": ("1", "input"), "head1": ("2", "output"), "head2": ("5", "output")}
CAUSES = ("features lost", "dead head", "output cut", "ranks, one class at argmax", "alive")


def w0_kept(initial: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Per weight tensor of ``mask``: the share of sum |W0| at the kept positions (1.0 = all of it kept).

    A criterion that keeps the pretrained features keeps far more of their magnitude than of their count;
    one that prunes them by noise keeps about its remaining fraction of both.
    """
    out = {}
    for name, m in mask.items():
        if not name.endswith(".weight"):
            continue
        w = initial[name].abs().double()
        total = float(w.sum())
        out[name.removesuffix(".weight")] = float(w[m.to(w.device)].sum()) / total if total > 0 else float("nan")
    return out


def head_of(model: nn.Module) -> str | None:
    """Name of the small head (Dropout, Linear, ReLU, Dropout, Linear, ReLU, Linear), None without one."""
    for name, m in model.named_children():
        if isinstance(m, nn.Sequential) and len(m) == 7 and all(isinstance(m[i], nn.Linear) for i in (1, 4, 6)):
            return name
    return None


@torch.no_grad()
def dead_units(model: nn.Module, batches: Iterable) -> dict[str, int]:
    """Per watched layer: the units that are exactly zero for every image of ``batches`` (dead ReLUs)."""
    head = model.get_submodule(head_of(model))
    alive: dict[str, torch.Tensor] = {}
    hooks = []
    for key, (index, side) in WATCHED.items():
        def seen(out: torch.Tensor, key=key):
            fired = (out.flatten(1) != 0).any(0).cpu()
            alive[key] = fired if key not in alive else alive[key] | fired
        module = head[int(index)]
        hooks.append(module.register_forward_pre_hook(lambda _m, inp, seen=seen: seen(inp[0])) if side == "input"
                     else module.register_forward_hook(lambda _m, _inp, out, seen=seen: seen(out)))
    model.eval()
    device = next(model.parameters()).device
    try:
        for x, _y in batches:
            model(x.to(device, non_blocking=True))
    finally:
        for h in hooks:
            h.remove()
    return {key: int((~a).sum()) for key, a in alive.items()}


def units_of(model: nn.Module) -> dict[str, int]:
    """How many units each watched layer has (256, 8, 8 for AlexNet-256-8-8-2)."""
    head = model.get_submodule(head_of(model))
    return {"features": head[1].in_features, "head1": head[1].out_features, "head2": head[4].out_features}


def score_constant(scores: np.ndarray) -> bool:
    """One score for every image: no threshold can separate anything (AUC exactly 0.5)."""
    return bool(len(scores) > 0 and np.ptp(scores) == 0)


def applies(model: nn.Module) -> bool:
    """The network has the small head (every registry network; not the MobileNet baseline's 2-way head)."""
    return head_of(model) is not None


def diagnose(model: nn.Module, val_batches: Iterable, scores: np.ndarray, argmax: np.ndarray,
             mask: Mapping[str, torch.Tensor], initial: Mapping[str, torch.Tensor] | None = None) -> dict:
    """Whether the network is alive on val and, if not, why: what the evaluate stage records per round."""
    dead, units = dead_units(model, val_batches), units_of(model)
    flat = score_constant(scores)
    return {"dead": dead, "units": units, "score_constant": flat,
            "cause": cause(dead, units, flat, bool(len(np.unique(argmax)) == 1)),
            "w0_kept": w0_kept(initial, mask) if initial is not None else None}


def cause(dead: Mapping[str, int], units: Mapping[str, int], constant_score: bool, constant_argmax: bool) -> str:
    """The first cause that applies, in the order of the forward pass."""
    if dead["features"] == units["features"]:
        return CAUSES[0]
    if dead["head1"] == units["head1"] or dead["head2"] == units["head2"]:
        return CAUSES[1]
    if constant_score:  # live units, one score: the output layer no longer reads them
        return CAUSES[2]
    if constant_argmax:
        return CAUSES[3]
    return CAUSES[4]
