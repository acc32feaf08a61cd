"""Masked SGD training: pruned weights stay exactly zero through every step.

The gradient of a pruned weight is zeroed before the step and the weight is re-masked after it, so
neither momentum nor weight decay can resurrect it. Both are fills, not multiplies, so a NaN or inf that
a diverging step leaves at a pruned position becomes 0.0 as well.
"""
from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import ClassPruneError
from .masks import keep_bits, zero_pruned

ADVICE = "lower train.lr or set train.grad_clip (e.g. 1.0)"


class TrainingDiverged(ClassPruneError):
    """Training left a non-finite loss or weight; nothing of the round is written."""


def first_nonfinite(model: nn.Module) -> str | None:
    """Name of the first parameter holding NaN or inf, or None.

    One fused norm per tensor and a single host sync: a NaN or inf anywhere makes that tensor's norm
    non-finite, so this is exact and costs one read of the weights.
    """
    names, tensors = zip(*model.named_parameters())
    norms = torch.stack(torch._foreach_norm(list(tensors)))
    bad = ~torch.isfinite(norms)
    if not bool(bad.any()):
        return None
    return names[int(bad.nonzero()[0, 0])]


def masked_step(model: nn.Module, optimizer: torch.optim.Optimizer, bits: Mapping[str, torch.Tensor],
                grad_clip: float = 0.0, norm: bool = False) -> torch.Tensor | None:
    """Zero pruned gradients, clip their norm (the ranking loss can spike), step, zero pruned weights.

    ``bits`` is ``masks.keep_bits(mask, params)``, made once per round. Returns the gradient norm before
    clipping (the clip computes it anyway; without a clip only when ``norm`` asks for it).
    """
    params = dict(model.named_parameters())
    zero_pruned({n: p.grad for n, p in params.items()}, bits)
    total = None
    if grad_clip > 0:
        total = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    elif norm:
        total = torch.nn.utils.get_total_norm([p.grad for p in params.values() if p.grad is not None])
    optimizer.step()
    zero_pruned(params, bits)
    return total


def step_values(loss_fn: nn.Module, logits: torch.Tensor, y: torch.Tensor, loss: float, lr: float,
                grad_norm: torch.Tensor | None) -> dict[str, float]:
    """What a training curve shows of one step; the parts come from detached logits (no effect on the step)."""
    values = {"loss": loss, "lr": lr}
    if hasattr(loss_fn, "parts"):
        with torch.no_grad():
            parts = loss_fn.parts(logits.detach(), y)
        values.update(wce=float(parts["wce"]), rank=float(parts["shr"]))
    if grad_norm is not None:
        values["grad_norm"] = float(grad_norm)
    return values


def lr_factor(step: int, iterations: int, schedule: str = "constant", warmup: int = 0) -> float:
    """Multiplier of the base lr at 0-based ``step``: a linear warm-up over ``warmup`` steps, then constant
    or a cosine decay that reaches 0 after the last step (a short round ends with small steps, so the
    weights it saves are not those of one noisy large step)."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup + 1) / (iterations - warmup + 1)))
    raise ValueError(f"unknown train.schedule {schedule!r} (constant or cosine)")


def sgd(train) -> dict:
    """The optimiser keywords of ``train_masked`` from params.yaml's ``train``: every trainer (LT rounds,
    baselines) uses them alike."""
    return {"lr": train.lr, "momentum": train.momentum, "weight_decay": train.weight_decay,
            "grad_clip": train.grad_clip, "schedule": train.schedule, "warmup": train.warmup}


def train_masked(model: nn.Module, mask: Mapping[str, torch.Tensor], loader: Iterable, loss_fn: nn.Module,
                 iterations: int, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 0.0,
                 grad_clip: float = 0.0, schedule: str = "constant", warmup: int = 0,
                 desc: str = "train", check_every: int = 10,
                 on_step: Callable[[int, nn.Module], None] | None = None,
                 log: Callable[[dict[str, float]], None] | None = None) -> list[float]:
    """Train ``iterations`` SGD steps, cycling through ``loader``; returns the loss of every step.

    The lr follows ``lr_factor`` (``schedule``, ``warmup``) through torch's LambdaLR.
    Raises TrainingDiverged (one line: where, which tensor, what to change) as soon as the loss or a
    weight is non-finite. ``on_step(step, model)`` runs after every step (1-based; late rewinding takes
    its snapshot there). ``log`` gets every step's loss, its parts (``loss_fn.parts`` on the detached logits),
    the lr and the gradient norm (classprune.lottery.trainlog). The loss is checked every step; the weights every ``check_every`` steps and
    after the last one (a check is one fused norm per tensor, about 1.5 % of a batch-16 step at 64 px on
    one thread, so checking every step would cost more than the 1 % we allow it).
    """
    params = dict(model.named_parameters())
    device = next(iter(params.values())).device  # batches follow the model (move it and loss_fn first)
    bits = keep_bits(mask, params)
    zero_pruned(params, bits)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    # LambdaLR evaluates step 0 when built, so an unknown schedule fails here, before the first step
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, iterations, schedule, warmup))
    model.train()
    losses: list[float] = []
    batches = itertools.chain.from_iterable(itertools.repeat(loader))
    bar = tqdm(range(iterations), desc=desc, disable=not sys.stderr.isatty(), leave=False)
    for step, (x, y) in zip(bar, batches):
        optimizer.zero_grad(set_to_none=True)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x)
        loss = loss_fn(logits, y)
        value = float(loss.detach())
        if not torch.isfinite(loss.detach()):
            bad = first_nonfinite(model)
            where = f"weight tensor {bad} is non-finite" if bad else f"the loss became {value}"
            raise TrainingDiverged(f"{desc}: training diverged at step {step + 1} of {iterations} ({where}); {ADVICE}")
        loss.backward()
        lr_now = optimizer.param_groups[0]["lr"]
        grad_norm = masked_step(model, optimizer, bits, grad_clip, norm=log is not None)
        if log is not None:
            log(step_values(loss_fn, logits, y, value, lr_now, grad_norm))
        scheduler.step()
        losses.append(value)
        if (step + 1) % check_every == 0 or step + 1 == iterations:
            bad = first_nonfinite(model)
            if bad:
                raise TrainingDiverged(f"{desc}: training diverged at step {step + 1} of {iterations} "
                                       f"(weight tensor {bad} holds NaN or inf); {ADVICE}")
        if on_step is not None:
            on_step(step + 1, model)
        bar.set_postfix(loss=f"{value:.3f}", refresh=False)
    return losses
