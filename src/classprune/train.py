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
                 grad_clip: float = 0.0, desc: str = "train", snapshot_at: int | None = None,
                 snapshot: dict | None = None) -> list[float]:
    """Train ``iterations`` SGD steps, cycling through ``loader``; returns the loss of every step.

    Late rewinding: with ``snapshot_at=k`` a copy of the state_dict after k steps (0: the masked start)
    is stored into the caller's dict ``snapshot``, so round 1 yields both W_k (the rewind point) and W_n.
    """
    if snapshot_at is not None and (snapshot is None or not 0 <= snapshot_at <= iterations):
        raise ValueError(f"snapshot_at must be in [0, iterations={iterations}] and needs a snapshot dict; "
                         f"got {snapshot_at}")
    params = dict(model.named_parameters())
    # float masks: multiplying by a bool mask converts it on every call (5x slower per step)
    mask = {n: m.to(device=params[n].device, dtype=params[n].dtype) for n, m in mask.items()}
    apply_mask(model, mask)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    model.train()
    losses: list[float] = []
    batches = itertools.chain.from_iterable(itertools.repeat(loader))
    bar = tqdm(range(iterations), desc=desc, disable=not sys.stderr.isatty(), leave=False)
    for step, (x, y) in zip(bar, batches):
        if step == snapshot_at:
            snapshot.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        optimizer.zero_grad(set_to_none=True)
        loss, _parts = loss_fn(model(x), y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {float(loss.detach())} at step {len(losses)}; "
                                     "lower train.lr or set train.grad_clip")
        loss.backward()
        masked_step(model, optimizer, mask, grad_clip)
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    if snapshot_at is not None and snapshot_at == len(losses):
        snapshot.update({k: v.detach().clone() for k, v in model.state_dict().items()})
    return losses
