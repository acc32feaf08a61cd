"""Masked SGD training: pruned weights stay exactly zero through every step.

The gradient of a pruned weight is zeroed before the step and the weight is re-masked after it, so
neither momentum nor weight decay can resurrect it.
"""
from __future__ import annotations

import itertools
import sys
from collections.abc import Iterable, Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from .masks import apply_mask


def masked_step(model: nn.Module, optimizer: torch.optim.Optimizer, mask: Mapping[str, torch.Tensor],
                grad_clip: float = 0.0) -> None:
    """Mask gradients, clip their norm (the ranking loss can spike), step, re-mask weights."""
    params = dict(model.named_parameters())
    for name, m in mask.items():
        if params[name].grad is not None:
            params[name].grad.mul_(m)
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    apply_mask(model, mask)


def train_masked(model: nn.Module, mask: Mapping[str, torch.Tensor], loader: Iterable, loss_fn: nn.Module,
                 iterations: int, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 0.0,
                 grad_clip: float = 0.0, desc: str = "train") -> list[float]:
    """Train ``iterations`` SGD steps, cycling through ``loader``; returns the loss of every step.

    Runs on the model's device: batches are moved there (non_blocking, from pinned memory on a GPU), so move
    the model and ``loss_fn`` (its gamma buffer) first."""
    params = dict(model.named_parameters())
    device = next(iter(params.values())).device
    # float masks: multiplying by a bool mask converts it on every call (5x slower per step)
    mask = {n: m.to(device=params[n].device, dtype=params[n].dtype) for n, m in mask.items()}
    apply_mask(model, mask)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    model.train()
    losses: list[float] = []
    batches = itertools.chain.from_iterable(itertools.repeat(loader))
    bar = tqdm(range(iterations), desc=desc, disable=not sys.stderr.isatty(), leave=False)
    for _, (x, y) in zip(bar, batches):
        optimizer.zero_grad(set_to_none=True)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss, _parts = loss_fn(model(x), y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {float(loss.detach())} at step {len(losses)}; "
                                     "lower train.lr or set train.grad_clip")
        loss.backward()
        masked_step(model, optimizer, mask, grad_clip)
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    return losses
