"""Pruning masks: one bool tensor per prunable parameter, keyed by the parameter's state_dict name."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError
from ..io import load_torch, save_torch

if TYPE_CHECKING:
    import pandas as pd

Mask = dict[str, torch.Tensor]


def prunable_names(model: nn.Module, include_biases: bool = True) -> list[str]:
    """Weights (and biases, as the authors' code prunes them) of every Conv2d and Linear layer."""
    names = []
    for module_name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            names.append(f"{module_name}.weight")
            if include_biases and module.bias is not None:
                names.append(f"{module_name}.bias")
    return names


def full_mask(model: nn.Module, include_biases: bool = True, ignore: Iterable[str] = ()) -> Mask:
    """All-ones mask of the prunable tensors; ``ignore`` names tensors never pruned (left out of the mask)."""
    names, ignore = prunable_names(model, include_biases), set(ignore)
    unknown = sorted(ignore - set(names))
    if unknown:
        raise ConfigError(f"prune.ignore names {unknown}, which are not prunable tensors; prunable: {', '.join(names)}")
    params = dict(model.named_parameters())
    return {n: torch.ones_like(params[n], dtype=torch.bool) for n in names if n not in ignore}


# Same-width integer dtypes, to AND a float tensor's bits with a mask's.
_INT_OF_WIDTH = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def keep_bits(mask: Mapping[str, torch.Tensor], like: Mapping[str, torch.Tensor]) -> Mask:
    """Per tensor of ``like``: an integer tensor with every bit set where the weight is kept, 0 where pruned.

    For ``zero_pruned``, built once per round on the weights' device.
    """
    out = {}
    for name, m in mask.items():
        t = like[name]
        out[name] = -m.to(device=t.device, dtype=_INT_OF_WIDTH[t.element_size()])  # True -> all ones
    return out


def zero_pruned(tensors: Mapping[str, torch.Tensor | None], bits: Mapping[str, torch.Tensor]) -> None:
    """Set pruned entries to exactly +0.0 in place, whatever they held: NaN and inf included.

    A bitwise AND of the float's bits with the mask's, not a multiply (NaN * 0 and inf * 0 are NaN, so a
    multiply keeps a diverged value alive on CPU kinds whose kernels produce one). This is the training
    hot path: on one CPU thread masked_fill_ costs about 9 ms per pass over AlexNet's 2.47M weights,
    36x the AND, which is as fast as a multiply (benchmarks/bench_step.py).
    """
    with torch.no_grad():
        for name, b in bits.items():
            t = tensors[name]
            if t is not None:
                t.view(b.dtype).bitwise_and_(b)


def apply_mask(model: nn.Module, mask: Mapping[str, torch.Tensor]) -> None:
    """Zero pruned weights in place, whatever value (NaN and inf included) they held."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, m in mask.items():
            params[name].masked_fill_(~m.to(device=params[name].device, dtype=torch.bool), 0.0)


def masked(tensor: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """A copy of ``tensor`` with the entries outside ``keep`` exactly 0.0 (NaN-proof, unlike a multiply)."""
    return tensor.masked_fill(~keep.bool(), 0.0)


def remaining(mask: Mapping[str, torch.Tensor]) -> float:
    """Kept fraction of the prunable weights (the tensors in ``mask``): the paper's x axis."""
    total = sum(m.numel() for m in mask.values())
    return sum(int(m.sum()) for m in mask.values()) / total


def remaining_all(mask: Mapping[str, torch.Tensor], n_parameters: int) -> float:
    """Kept fraction of all ``n_parameters``: tensors never pruned (biases, ignored layers) count as kept,
    so a model whose output layer is left whole is not credited with a sparsity it does not have."""
    pruned = sum(m.numel() - int(m.sum()) for m in mask.values())
    return (n_parameters - pruned) / n_parameters


def sparsity_report(mask: Mapping[str, torch.Tensor]) -> pd.DataFrame:
    """Per tensor and total: size, remaining count and fraction."""
    import pandas as pd

    rows = [{"tensor": n, "size": m.numel(), "remaining": int(m.sum())} for n, m in mask.items()]
    df = pd.DataFrame(rows)
    total = pd.DataFrame([{"tensor": "total", "size": df["size"].sum(), "remaining": df["remaining"].sum()}])
    df = pd.concat([df, total], ignore_index=True)
    df["fraction"] = df["remaining"] / df["size"]
    return df


def save_mask(mask: Mapping[str, torch.Tensor], path: str | Path) -> None:
    save_torch(path, {n: m.to(torch.bool).cpu() for n, m in mask.items()})


def load_mask(path: str | Path) -> Mask:
    mask = load_torch(path)
    if not isinstance(mask, dict) or not all(isinstance(m, torch.Tensor) and m.dtype == torch.bool
                                             for m in mask.values()):
        raise CheckpointError(f"{path} is not a mask (expected a dict of bool tensors)")
    return mask
