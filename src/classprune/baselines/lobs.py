"""L-OBS (Dong et al. 2017): layer-wise optimal brain surgeon on the dense trained network, no retraining.

Hessians, inverses and the OBS solves run on the device the model is on (float64).
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..lottery.pruning import Scores, keep_top, register_criterion
from .common import levels, on_device

if TYPE_CHECKING:
    from ..config import Params


def _layers(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def _layer_inputs(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's input vectors as rows (conv: one row per patch, ordered like weight.flatten(1)),
    with a constant 1 appended when the layer has a bias."""
    if isinstance(module, nn.Conv2d):
        if module.groups != 1 or module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise ConfigError(f"L-OBS supports plain Conv2d layers only (groups=1, zero padding), got {module}")
        cols = F.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)
        rows = cols.transpose(1, 2).reshape(-1, cols.shape[1])
    else:
        rows = x.reshape(-1, x.shape[-1])
    if module.bias is not None:
        rows = torch.cat([rows, rows.new_ones(rows.shape[0], 1)], dim=1)
    return rows


@torch.no_grad()
def layer_hessians(model: nn.Module, batches: Iterable) -> dict[str, torch.Tensor]:
    """{layer: H = mean of x x^T over its input vectors} (float64), from forward hooks in eval mode.

    For a layer with output y = W x, ||(W' - W) x||^2 has Hessian 2H in every output row: this is the
    layer-wise objective L-OBS minimises, so one H serves all rows of the layer.
    """
    layers = _layers(model)
    sums = {n: None for n in layers}
    counts = dict.fromkeys(layers, 0)

    def hook(name):
        def fn(module, inputs):
            rows = _layer_inputs(module, inputs[0].detach())
            h = (rows.T @ rows).double()
            sums[name] = h if sums[name] is None else sums[name] + h
            counts[name] += rows.shape[0]
        return fn

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in layers.items()]
    try:
        model.eval()
        for x, _y in on_device(batches, next(model.parameters()).device):
            model(x)
    finally:
        for h in handles:
            h.remove()
    if any(c == 0 for c in counts.values()):
        raise ConfigError("L-OBS got no training batches; the train split is empty")
    return {n: sums[n] / counts[n] for n in layers}


def damped(h: torch.Tensor, damp: float) -> torch.Tensor:
    """H + damp * mean(diag H) * I: a few batches leave H rank-deficient (conv3-5 see few patches)."""
    lam = damp * float(h.diagonal().mean()) or damp
    return h + lam * torch.eye(h.shape[0], dtype=h.dtype, device=h.device)


def spd_inverse(h: torch.Tensor) -> torch.Tensor:
    """Inverse of a symmetric positive definite matrix (cholesky_solve beats cholesky_inverse on CPU)."""
    return torch.cholesky_solve(torch.eye(h.shape[0], dtype=h.dtype, device=h.device), torch.linalg.cholesky(h))


def _weight_matrix(module: nn.Module, state: Mapping[str, torch.Tensor], prefix: str) -> torch.Tensor:
    """Rows = output units, columns = inputs (+ the bias as the last column), as the Hessian is laid out."""
    w = state[f"{prefix}.weight"].reshape(module.weight.shape[0], -1).double()
    if module.bias is not None:
        w = torch.cat([w, state[f"{prefix}.bias"].double()[:, None]], dim=1)
    return w


def _keep_matrix(module: nn.Module, mask: Mapping[str, torch.Tensor], prefix: str) -> torch.Tensor:
    """The mask laid out like ``_weight_matrix``; tensors outside the mask (unpruned biases) are kept."""
    rows = module.weight.shape[0]
    device = module.weight.device
    keep = mask.get(f"{prefix}.weight", torch.ones(module.weight.shape, dtype=torch.bool)).reshape(rows, -1)
    keep = keep.to(device)
    if module.bias is not None:
        bias = mask.get(f"{prefix}.bias", torch.ones(rows, dtype=torch.bool)).to(device)
        keep = torch.cat([keep, bias[:, None]], dim=1)
    return keep


@register_criterion("lobs")
def lobs_scores(trained: Mapping[str, torch.Tensor], initial: Mapping[str, torch.Tensor] | None,
                names: list[str], *, model: nn.Module | None = None, batches: Iterable | None = None,
                hessians: Mapping[str, torch.Tensor] | None = None,
                inverses: Mapping[str, torch.Tensor] | None = None, damp: float = 0.01, **_) -> Scores:
    """OBS saliency w_q^2 / (2 [H^-1]_qq) of every weight of the trained network: the rise of the layer's
    reconstruction error when w_q alone is removed and the rest of its row compensates.

    Give ``model`` (its architecture) and either ``hessians`` / ``inverses`` or ``batches`` to compute them.
    """
    if model is None or (hessians is None and inverses is None and batches is None):
        raise ConfigError("criterion 'lobs' needs model and batches (or hessians): it is a baseline "
                          "(baselines.methods), not a lottery-ticket prune.criterion")
    layers = _layers(model)
    if inverses is None:
        if hessians is None:
            model.load_state_dict(dict(trained))
            hessians = layer_hessians(model, batches)
        inverses = {n: spd_inverse(damped(hessians[n], damp)) for n in layers}
    scores: Scores = {}
    for prefix, module in layers.items():
        w = _weight_matrix(module, trained, prefix).to(inverses[prefix].device)
        s = w.square() / (2.0 * inverses[prefix].diagonal())
        if f"{prefix}.weight" in names:
            scores[f"{prefix}.weight"] = s[:, :module.weight[0].numel()].reshape(module.weight.shape)
        if module.bias is not None and f"{prefix}.bias" in names:
            scores[f"{prefix}.bias"] = s[:, -1]
    return scores


def _solve_subsets(m: torch.Tensor, select: torch.Tensor, rhs: torch.Tensor, block_bytes: int) -> torch.Tensor:
    """Row i: x_i = M[S_i, S_i]^-1 rhs_i[S_i] with S_i = select[i], scattered back (0 outside S_i).

    Rows are sorted by |S_i| and solved in blocks that fit ``block_bytes``; each block is padded to its
    largest set with identity rows, so one batched Cholesky solves all of it. M must be symmetric
    positive definite (a damped Hessian or its inverse), hence so is every M[S, S].
    """
    counts = select.sum(1)
    order = torch.argsort(counts, descending=True)
    n = m.shape[0]
    m = F.pad(m, (0, 1, 0, 1))  # index n: a zero row and column that padding slots gather from
    out = torch.zeros(rhs.shape[0], n + 1, dtype=rhs.dtype, device=rhs.device)
    rhs = F.pad(rhs, (0, 1))
    start = 0
    while start < len(order):
        size = int(counts[order[start]])
        if size == 0:
            break
        # ~32 bytes per matrix entry at the peak: the gathered block, its factor and the gather's indices.
        rows = order[start:start + max(1, block_bytes // (32 * size * size))]
        start += len(rows)
        idx = torch.argsort((~select[rows]).to(torch.int8), dim=1, stable=True)[:, :size]  # selected first
        valid = torch.arange(size, device=m.device) < counts[rows][:, None]
        idx = torch.where(valid, idx, n)
        a = m[idx[:, :, None], idx[:, None, :]]
        a.diagonal(dim1=1, dim2=2).add_(~valid)  # identity on the padding
        chol, info = torch.linalg.cholesky_ex(a)
        if bool(info.any()):  # rounding on a nearly singular block: a relative jitter restores definiteness
            a.diagonal(dim1=1, dim2=2).add_(1e-10 * float(m.diagonal().mean()))
            chol = torch.linalg.cholesky(a)
        del a
        b = rhs[rows].gather(1, idx)[:, :, None]  # 0 on the padding, so x is 0 there
        # Two triangular solves: much faster than torch.cholesky_solve on CPU batches.
        y = torch.linalg.solve_triangular(chol, b, upper=False)
        x = torch.linalg.solve_triangular(chol.transpose(1, 2), y, upper=True)[:, :, 0]
        out[rows] = torch.zeros(len(rows), n + 1, dtype=rhs.dtype, device=rhs.device).scatter_(1, idx, x)
    return out[:, :n]


def obs_update(w: torch.Tensor, keep: torch.Tensor, h: torch.Tensor, h_inv: torch.Tensor,
               block_bytes: int = 256 << 20) -> torch.Tensor:
    """The surviving weights that minimise (w' - w)^T H (w' - w) per row with the pruned ones at 0.

    ``h`` is the (damped) Hessian, ``h_inv`` its inverse. The OBS form
    dw = -H^-1[:, P] (H^-1[P, P])^-1 w_P and the equivalent form on the survivors
    dw_S = H[S, S]^-1 H[S, P] w_P give the same optimum; each row uses the one with the smaller system.
    """
    w, keep = w.to(h.device, h.dtype), keep.to(h.device, torch.bool)
    n_keep = keep.sum(1)
    n_pruned = keep.shape[1] - n_keep
    out = w * keep
    survivors = (n_keep <= n_pruned) & (n_pruned > 0)
    if survivors.any():
        k, ws = keep[survivors], w[survivors]
        out[survivors] += _solve_subsets(h, k, (ws * ~k) @ h, block_bytes)
    pruned_form = (n_keep > n_pruned) & (n_pruned > 0)
    if pruned_form.any():
        k, ws = keep[pruned_form], w[pruned_form]
        y = _solve_subsets(h_inv, ~k, ws, block_bytes)
        out[pruned_form] = (ws - y @ h_inv) * k
    return out

def lobs(params: Params, seed: int, device: torch.device) -> list[dict]:
    """The dense trained network (round 1 of the source scenario) pruned layer by layer by L-OBS at each
    LT level, evaluated without retraining."""
    from .. import io
    from ..evaluation.evaluate import evaluate_model
    from ..lottery.runner import build, train_loader
    from ..paths import round_paths
    from ..lottery.masks import full_mask

    cfg = params.baselines.lobs
    w0 = io.load_torch(round_paths(params, params.baselines.source_scenario, seed, 0).weights)
    trained = io.load_torch(round_paths(params, params.baselines.source_scenario, seed, 1).weights)
    model = build(params, seed, device=device)
    model.load_state_dict(trained)
    layers = _layers(model)
    loader = train_loader(params, seed=seed, device=device)
    hessians = layer_hessians(model, itertools.islice(loader, cfg.batches))
    systems = {n: damped(hessians.pop(n), cfg.damp) for n in layers}
    inverses = {n: spd_inverse(h) for n, h in systems.items()}
    full = full_mask(model, params.prune.include_biases, params.prune.ignore)
    scores = lobs_scores(trained, None, list(full), model=model, inverses=inverses)
    out = []
    for k, keep in levels(params):
        mask = keep_top(scores, full, keep, "layerwise")
        state = {n: t.clone() for n, t in trained.items()}
        for prefix, module in layers.items():
            w = _weight_matrix(module, trained, prefix)
            kept = _keep_matrix(module, mask, prefix)
            new = obs_update(w, kept, systems[prefix], inverses[prefix], cfg.block_mb << 20)
            n_in = module.weight[0].numel()
            state[f"{prefix}.weight"] = new[:, :n_in].reshape(module.weight.shape).to(trained[f"{prefix}.weight"].dtype)
            if module.bias is not None:
                state[f"{prefix}.bias"] = new[:, -1].to(trained[f"{prefix}.bias"].dtype)
        model.load_state_dict(state)
        out.append({"round": k, **evaluate_model(params, model, mask, w0)})
    return out


