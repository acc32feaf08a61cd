"""The compact sparse file of an exported model: only the surviving weights and their positions.

Per tensor: ``values`` (the surviving entries in C order, fp32 or fp16) and their positions, either a packed
bitmask (``numpy.packbits`` of the flattened mask, 1 bit per weight) or ``indices`` (int32 flat positions,
32 bits per survivor), whichever is smaller for that tensor: the bitmask above 1/32 = 3.125 % remaining, the
indices below. Plus the shape. Integer tensors (BN's ``num_batches_tracked``) are stored as they are. A file
names its network (``network``: the registry's arch and the head widths); a file without it is
AlexNet-256-8-8-2 (files from before the registry). Loadable with ``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import io
from ..errors import CheckpointError

FORMAT = "classprune-sparse-v1"
PAPERS = {"arch": "alexnet", "head": [8, 8]}  # the network of a file that names none


def to_sparse(state: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor],
              dtype: torch.dtype = torch.float32, arch: str = "alexnet",
              head: Sequence[int] = (8, 8)) -> dict[str, Any]:
    """Survivors of ``mask`` as values + positions; tensors without a mask entry are stored dense."""
    tensors: dict[str, Any] = {}
    for name, t in state.items():
        t = t.detach().cpu()
        if name not in mask:
            tensors[name] = {"shape": list(t.shape), "dense": t.to(dtype).clone() if t.is_floating_point() else t.clone()}
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
    out = {"format": FORMAT, "dtype": str(dtype).removeprefix("torch."), "tensors": tensors}
    network = {"arch": arch, "head": [int(w) for w in head]}
    return out if network == PAPERS else {**out, "network": network}  # AlexNet's files as before the registry


def _network(sparse: Mapping[str, Any], bad) -> tuple[str, tuple[int, int]]:
    from ..models import registry

    net = sparse.get("network", PAPERS)
    head = net.get("head") if isinstance(net, dict) else None
    if not isinstance(net, dict) or net.get("arch") not in registry.ARCHS or not (
            isinstance(head, list) and len(head) == 2 and all(isinstance(w, int) and w > 0 for w in head)):
        raise bad(f"unknown network {net!r}")
    return net["arch"], (head[0], head[1])


def _build(arch: str, head: tuple[int, int]) -> torch.nn.Module:
    """The network without allocating its weights."""
    from ..models.network import build_model

    with torch.device("meta"):
        return build_model("none", arch=arch, head=head)


def from_sparse(sparse: Any, path: str | Path = "<sparse>") -> dict[str, torch.Tensor]:
    """Dense fp32 state_dict of the file's network from :func:`to_sparse` output, checked entry by entry."""
    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"refusing exported model {path}: {why}")

    if not isinstance(sparse, dict) or sparse.get("format") != FORMAT or not isinstance(sparse.get("tensors"), dict):
        raise bad(f"not a {FORMAT} file")
    dtype = {"float32": torch.float32, "float16": torch.float16}.get(sparse.get("dtype"))
    if dtype is None:
        raise bad(f"unknown value dtype {sparse.get('dtype')!r}")
    arch, head = _network(sparse, bad)
    ref, tensors = _build(arch, head).state_dict(), sparse["tensors"]
    if set(ref) != set(tensors):
        missing, extra = sorted(set(ref) - set(tensors)), sorted(set(tensors) - set(ref))
        raise bad(f"tensor names differ from {arch}'s (missing {missing[:3]}, unexpected {extra[:3]})")
    state = {}
    for name, want in ref.items():
        e = tensors[name]
        if not isinstance(e, dict) or list(e.get("shape", [])) != list(want.shape):
            raise bad(f"{name}: shape {e.get('shape') if isinstance(e, dict) else e!r} != {list(want.shape)}")
        numel = want.numel()
        if "dense" in e:
            d, kind = e["dense"], dtype if want.is_floating_point() else want.dtype
            if not isinstance(d, torch.Tensor) or d.dtype != kind or tuple(d.shape) != tuple(want.shape):
                raise bad(f"{name}: dense entry is not a {kind} tensor of shape {list(want.shape)}")
            state[name] = d.to(torch.float32) if want.is_floating_point() else d.clone()
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
    """The file's network in eval mode holding the weights of a sparse export file (weights_only load)."""
    sparse = io.load_torch(path)
    state = from_sparse(sparse, path)
    model = _build(*_network(sparse, lambda why: CheckpointError(f"refusing exported model {path}: {why}")))
    model.load_state_dict(state, assign=True)
    return model.eval()
