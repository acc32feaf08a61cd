"""Pruning masks: one bool tensor per prunable parameter, keyed by the parameter's state_dict name."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from .errors import CheckpointError
from .io import load_torch, save_torch

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


def full_mask(model: nn.Module, include_biases: bool = True) -> Mask:
    params = dict(model.named_parameters())
    return {n: torch.ones_like(params[n], dtype=torch.bool) for n in prunable_names(model, include_biases)}


def apply_mask(model: nn.Module, mask: Mapping[str, torch.Tensor]) -> None:
    """Zero pruned weights in place."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, m in mask.items():
            params[name].mul_(m)


def remaining(mask: Mapping[str, torch.Tensor]) -> float:
    total = sum(m.numel() for m in mask.values())
    return sum(int(m.sum()) for m in mask.values()) / total


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
