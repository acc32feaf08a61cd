"""The compact sparse file of an exported model: only the surviving weights and their positions.

Per tensor: ``values`` (the surviving entries in C order, fp32 or fp16) and their positions, either a packed
bitmask (``numpy.packbits`` of the flattened mask, 1 bit per weight) or ``indices`` (int32 flat positions,
32 bits per survivor), whichever is smaller for that tensor: the bitmask above 1/32 = 3.125 % remaining, the
indices below. Plus the shape. Loadable with ``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import io
from ..errors import CheckpointError

FORMAT = "classprune-sparse-v1"


def to_sparse(state: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor],
              dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """Survivors of ``mask`` as values + positions; tensors without a mask entry are stored dense."""
    tensors: dict[str, Any] = {}
    for name, t in state.items():
        t = t.detach().cpu()
        if name not in mask:
            tensors[name] = {"shape": list(t.shape), "dense": t.to(dtype).clone()}
            continue
        m = mask[name].cpu().numpy().reshape(-1)
        if m.size != t.numel():
            raise CheckpointError(f"mask of {name} has {m.size} entries, weights {t.numel()}")
        flat = t.reshape(-1).numpy()
        positions = np.flatnonzero(m)
        entry: dict[str, Any] = {"shape": list(t.shape), "values": torch.from_numpy(flat[positions].copy()).to(dtype)}
        if 4 * positions.size < (m.size + 7) // 8:
            entry["indices"] = torch.from_numpy(positions.astype(np.int32))
        else:
            entry["bitmask"] = torch.from_numpy(np.packbits(m))
        tensors[name] = entry
    return {"format": FORMAT, "dtype": str(dtype).removeprefix("torch."), "tensors": tensors}


def _reference_state() -> dict[str, torch.Tensor]:
    """Names, shapes and dtypes of AlexNet-256-8-8-2, without allocating its weights."""
    from ..models.network import build_model

    with torch.device("meta"):
        return build_model("none").state_dict()


def from_sparse(sparse: Any, path: str | Path = "<sparse>") -> dict[str, torch.Tensor]:
    """Dense fp32 state_dict of AlexNet-256-8-8-2 from :func:`to_sparse` output, checked entry by entry."""
    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"refusing exported model {path}: {why}")

    if not isinstance(sparse, dict) or sparse.get("format") != FORMAT or not isinstance(sparse.get("tensors"), dict):
        raise bad(f"not a {FORMAT} file")
    dtype = {"float32": torch.float32, "float16": torch.float16}.get(sparse.get("dtype"))
    if dtype is None:
        raise bad(f"unknown value dtype {sparse.get('dtype')!r}")
    ref, tensors = _reference_state(), sparse["tensors"]
    if set(ref) != set(tensors):
        missing, extra = sorted(set(ref) - set(tensors)), sorted(set(tensors) - set(ref))
        raise bad(f"tensor names differ from AlexNet-256-8-8-2 (missing {missing[:3]}, unexpected {extra[:3]})")
    state = {}
    for name, want in ref.items():
        e = tensors[name]
        if not isinstance(e, dict) or list(e.get("shape", [])) != list(want.shape):
            raise bad(f"{name}: shape {e.get('shape') if isinstance(e, dict) else e!r} != {list(want.shape)}")
        numel = want.numel()
        if "dense" in e:
            d = e["dense"]
            if not isinstance(d, torch.Tensor) or d.dtype != dtype or tuple(d.shape) != tuple(want.shape):
                raise bad(f"{name}: dense entry is not a {dtype} tensor of shape {list(want.shape)}")
            state[name] = d.to(torch.float32)
            continue
        values = e.get("values")
        if not isinstance(values, torch.Tensor) or values.dtype != dtype or values.dim() != 1:
            raise bad(f"{name}: values are not a 1-d {dtype} tensor")
        if isinstance(e.get("indices"), torch.Tensor):
            idx = e["indices"]
            if idx.dtype != torch.int32 or idx.dim() != 1:
                raise bad(f"{name}: indices are not a 1-d int32 tensor")
            positions = idx.numpy().astype(np.int64)
            if positions.size and (positions.min() < 0 or positions.max() >= numel or np.any(np.diff(positions) <= 0)):
                raise bad(f"{name}: indices out of range or not increasing")
        elif isinstance(e.get("bitmask"), torch.Tensor):
            bits = e["bitmask"]
            if bits.dtype != torch.uint8 or bits.numel() != (numel + 7) // 8:
                raise bad(f"{name}: bitmask is not {(numel + 7) // 8} uint8 bytes")
            positions = np.flatnonzero(np.unpackbits(bits.numpy(), count=numel))
        else:
            raise bad(f"{name}: no positions (indices or bitmask)")
        if positions.size != values.numel():
            raise bad(f"{name}: {values.numel()} values for {positions.size} positions")
        flat = torch.zeros(numel, dtype=torch.float32)
        flat[torch.from_numpy(positions)] = values.to(torch.float32)
        state[name] = flat.reshape(want.shape)
    return state


def load_sparse(path: str | Path) -> torch.nn.Module:
    """AlexNet-256-8-8-2 in eval mode holding the weights of a sparse export file (weights_only load)."""
    from ..models.network import build_model

    state = from_sparse(io.load_torch(path), path)
    with torch.device("meta"):
        model = build_model("none")
    model.load_state_dict(state, assign=True)
    return model.eval()


