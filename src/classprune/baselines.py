"""The paper's comparison methods: SNIP (with and without retraining), L-OBS and MobileNet.

Each baseline is registered in ``BASELINES`` as ``fn(params, seed) -> [result, ...]``; ``run_baseline``
writes the results as ``reports/rounds/seed_<s>/<method>.json``, the same format the LT
evaluate stage writes, so the report stage puts them beside the scenarios without knowing about them.
Pruning baselines are evaluated at the LT levels (1-p)^(k-1), k = 1..R, under ``round`` k.

The SNIP and L-OBS scores are criteria of the core registry (``pruning.CRITERIA``): selection is the
core's ``keep_top``, so they prune exactly like the LT scenarios do.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError
from .pruning import Scores, keep_top, register_criterion

if TYPE_CHECKING:
    from .config import Params, SnipCfg

Baseline = Callable[["Params", int], list[dict]]
BASELINES: dict[str, Baseline] = {}


def register_baseline(name: str) -> Callable[[Baseline], Baseline]:
    def deco(fn: Baseline) -> Baseline:
        BASELINES[name] = fn
        return fn
    return deco


def _loss_value(out) -> torch.Tensor:
    """Our losses return (loss, parts); plain torch losses return the tensor."""
    return out[0] if isinstance(out, tuple) else out


# --- SNIP (Lee et al. 2019) ------------------------------------------------------------------------------

@register_criterion("snip")
def snip_scores(trained: Mapping[str, torch.Tensor] | None, initial: Mapping[str, torch.Tensor] | None,
                names: list[str], *, model: nn.Module | None = None, batches: Iterable | None = None,
                loss_fn: Callable | None = None, **_) -> Scores:
    """Connection sensitivity |dL/dw * w| at the initial weights, gradient averaged over ``batches``.

    ``trained`` is ignored: SNIP prunes before training. ``initial`` (if given) is loaded into ``model``
    first. Eval mode, so dropout noise does not enter the scores and they are reproducible. SNIP's
    normalisation by the sum of all scores does not change the ranking and is left out.
    """
    if model is None or batches is None or loss_fn is None:
        raise ConfigError("criterion 'snip' needs model, batches and loss_fn: it is a baseline "
                          "(baselines.methods), not a lottery-ticket prune.criterion")
    if initial is not None:
        model.load_state_dict(dict(initial))
    model.eval()
    model.zero_grad(set_to_none=True)
    n = 0
    for x, y in batches:
        _loss_value(loss_fn(model(x), y)).backward()
        n += 1
    if n == 0:
        raise ConfigError("SNIP got no training batches; the train split is empty")
    params = dict(model.named_parameters())
    scores = {name: (params[name].grad / n * params[name]).abs().detach() for name in names}
    model.zero_grad(set_to_none=True)
    return scores


def _snip_masks(params: Params, seed: int, cfg: SnipCfg) -> tuple[dict, list[tuple[int, dict]]]:
    """W0 of the source scenario and the one-shot global SNIP mask at every LT level."""
    from . import io, pipeline
    from .losses import ClassDependentLoss
    from .masks import full_mask

    w0 = io.load_torch(pipeline.round_paths(params, params.baselines.source_scenario, seed, 0).weights)
    model = pipeline.build(params, seed)
    loader = pipeline._loader(params, "train", train=True, seed=seed)
    batches = itertools.islice(loader, cfg.batches)
    full = full_mask(model, params.prune.include_biases)
    scores = snip_scores(None, w0, list(full), model=model, batches=batches, loss_fn=ClassDependentLoss([1.0, 1.0]))
    return w0, [(k, keep_top(scores, full, keep, "global")) for k, keep in levels(params)]


def levels(params: Params) -> list[tuple[int, float]]:
    """(round k, kept fraction (1-p)^(k-1)): the remaining-weight levels the LT rounds train at."""
    return [(r.k, (1.0 - params.prune.rate) ** (r.k - 1)) for r in params.prune.rounds]


@register_baseline("snip")
def snip(params: Params, seed: int) -> list[dict]:
    """W0 pruned by SNIP, evaluated untrained (the paper's "SNIP")."""
    from . import pipeline
    from .masks import apply_mask

    w0, masks = _snip_masks(params, seed, params.baselines.snip)
    model, out = pipeline.build(params, seed), []
    for k, mask in masks:
        model.load_state_dict(w0)
        apply_mask(model, mask)
        out.append({"round": k, **pipeline.evaluate_model(params, model, mask)})
    return out


@register_baseline("snip_trained")
def snip_trained(params: Params, seed: int) -> list[dict]:
    """SNIP mask on W0, then trained with the mask fixed for one LT round's iterations (plain CE)."""
    from . import pipeline
    from .losses import ClassDependentLoss
    from .train import train_masked

    w0, masks = _snip_masks(params, seed, params.baselines.snip_trained)
    model, t, out = pipeline.build(params, seed), params.train, []
    for k, mask in masks:
        model.load_state_dict(w0)  # every level starts from W0; train_masked makes a fresh optimizer
        torch.manual_seed(seed * 1000 + k)  # dropout, as in the LT round k
        losses = train_masked(model, mask, pipeline._loader(params, "train", train=True, seed=seed * 1000 + k),
                              ClassDependentLoss([1.0, 1.0]), t.iterations, t.lr, t.momentum, t.weight_decay,
                              t.grad_clip, desc=f"snip_trained level {k}")
        out.append({"round": k, "final_loss": losses[-1], **pipeline.evaluate_model(params, model, mask)})
    return out


# --- L-OBS (Dong et al. 2017) ----------------------------------------------------------------------------

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
        for x, _y in batches:
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
    return h + lam * torch.eye(h.shape[0], dtype=h.dtype)


def spd_inverse(h: torch.Tensor) -> torch.Tensor:
    """Inverse of a symmetric positive definite matrix (cholesky_solve beats cholesky_inverse on CPU)."""
    return torch.cholesky_solve(torch.eye(h.shape[0], dtype=h.dtype), torch.linalg.cholesky(h))


def _weight_matrix(module: nn.Module, state: Mapping[str, torch.Tensor], prefix: str) -> torch.Tensor:
    """Rows = output units, columns = inputs (+ the bias as the last column), as the Hessian is laid out."""
    w = state[f"{prefix}.weight"].reshape(module.weight.shape[0], -1).double()
    if module.bias is not None:
        w = torch.cat([w, state[f"{prefix}.bias"].double()[:, None]], dim=1)
    return w


def _keep_matrix(module: nn.Module, mask: Mapping[str, torch.Tensor], prefix: str) -> torch.Tensor:
    """The mask laid out like ``_weight_matrix``; tensors outside the mask (unpruned biases) are kept."""
    rows = module.weight.shape[0]
    keep = mask.get(f"{prefix}.weight", torch.ones(module.weight.shape, dtype=torch.bool)).reshape(rows, -1)
    if module.bias is not None:
        keep = torch.cat([keep, mask.get(f"{prefix}.bias", torch.ones(rows, dtype=torch.bool))[:, None]], dim=1)
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
        w = _weight_matrix(module, trained, prefix)
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
    out = torch.zeros(rhs.shape[0], n + 1, dtype=rhs.dtype)
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
        valid = torch.arange(size) < counts[rows][:, None]
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
        out[rows] = torch.zeros(len(rows), n + 1, dtype=rhs.dtype).scatter_(1, idx, x)
    return out[:, :n]


def obs_update(w: torch.Tensor, keep: torch.Tensor, h: torch.Tensor, h_inv: torch.Tensor,
               block_bytes: int = 256 << 20) -> torch.Tensor:
    """The surviving weights that minimise (w' - w)^T H (w' - w) per row with the pruned ones at 0.

    ``h`` is the (damped) Hessian, ``h_inv`` its inverse. The OBS form
    dw = -H^-1[:, P] (H^-1[P, P])^-1 w_P and the equivalent form on the survivors
    dw_S = H[S, S]^-1 H[S, P] w_P give the same optimum; each row uses the one with the smaller system.
    """
    w, keep = w.to(h.dtype), keep.to(torch.bool)
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


@register_baseline("lobs")
def lobs(params: Params, seed: int) -> list[dict]:
    """The dense trained network (round 1 of the source scenario) pruned layer by layer by L-OBS at each
    LT level, evaluated without retraining."""
    from . import io, pipeline
    from .masks import full_mask

    cfg = params.baselines.lobs
    trained = io.load_torch(pipeline.round_paths(params, params.baselines.source_scenario, seed, 1).weights)
    model = pipeline.build(params, seed)
    model.load_state_dict(trained)
    layers = _layers(model)
    hessians = layer_hessians(model, itertools.islice(pipeline._loader(params, "train", train=True, seed=seed),
                                                      cfg.batches))
    systems = {n: damped(hessians.pop(n), cfg.damp) for n in layers}
    inverses = {n: spd_inverse(h) for n, h in systems.items()}
    full = full_mask(model, params.prune.include_biases)
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
        out.append({"round": k, **pipeline.evaluate_model(params, model, mask)})
    return out


# --- MobileNet (Howard et al.) ---------------------------------------------------------------------------

def build_mobilenet(arch: str = "mobilenet_v3_small", seed: int = 0, pretrained: str = "none") -> nn.Module:
    """torchvision MobileNet with a 2-way head; ImageNet features when the AlexNet gets them too."""
    import torchvision.models as tvm

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(tvm, arch)(weights=None, num_classes=2)
    if pretrained == "imagenet":
        state = _imagenet_mobilenet(arch)
        head = [k for k, v in model.state_dict().items() if v.shape != state.get(k, v).shape]
        model.load_state_dict({k: v for k, v in state.items() if k not in head}, strict=False)
    return model


def _imagenet_mobilenet(arch: str) -> dict[str, torch.Tensor]:
    from torch.hub import get_dir, load_state_dict_from_url
    from torchvision.models import get_model_weights

    from .errors import CheckpointError

    url = get_model_weights(arch).IMAGENET1K_V1.url
    ckpt_dir = f"{get_dir()}/checkpoints"
    try:
        return load_state_dict_from_url(url, model_dir=ckpt_dir, map_location="cpu", progress=False, check_hash=True)
    except Exception as exc:  # noqa: BLE001 - any failure means "weights not available"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"ImageNet weights for {arch} not available: put {url.rsplit('/', 1)[-1]} into "
                              f"{ckpt_dir} (or set TORCH_HOME), or use model.pretrained: none ({reason})") from None


@register_baseline("mobilenet")
def mobilenet(params: Params, seed: int) -> list[dict]:
    """MobileNet trained with the class-dependent loss of ``baselines.mobilenet`` (gamma, lam) for
    one LT round's iterations; one point at its parameter count relative to the paper's AlexNet."""
    from . import pipeline
    from .data.loader import class_counts
    from .losses import ClassDependentLoss, resolve_gamma
    from .masks import full_mask
    from .model import NUM_PARAMETERS, count_parameters
    from .train import train_masked

    cfg, t = params.baselines.mobilenet, params.train
    model = build_mobilenet(cfg.arch, seed, params.model.pretrained)
    mask = full_mask(model, params.prune.include_biases)
    loss = ClassDependentLoss(resolve_gamma(cfg.gamma, class_counts(pipeline.CACHE, "train")), cfg.lam, t.margin)
    torch.manual_seed(seed * 1000 + 1)
    losses = train_masked(model, mask, pipeline._loader(params, "train", train=True, seed=seed * 1000 + 1), loss,
                          t.iterations, t.lr, t.momentum, t.weight_decay, t.grad_clip, desc=cfg.arch)
    result = pipeline.evaluate_model(params, model, mask)
    n_params = count_parameters(model)
    return [{"round": 1, **result, "remaining": n_params / NUM_PARAMETERS, "parameters": n_params,
             "arch": cfg.arch, "final_loss": losses[-1]}]


# --- stage ------------------------------------------------------------------------------------------------

def run_baseline(params: Params, method: str, seed: int) -> dict:
    """Run one baseline for one seed; write its round JSONs (replacing the method's whole folder)."""
    from . import io, pipeline

    if method not in BASELINES:
        raise ConfigError(f"unknown baseline {method!r}; allowed: {', '.join(sorted(BASELINES))}")
    params.check_seed(seed)  # a seed outside run.seeds is a user error
    pipeline.set_threads(params)
    results = BASELINES[method](params, seed)
    io.write_json(pipeline.metrics_path(method, seed),
                  {"method": method, "kind": "baseline", "seed": seed, "rounds": results})
    return {"method": method, "seed": seed,
            "levels": [{"round": r["round"], "remaining": round(r["remaining"], 6), "test_auc": r["test"]["auc"]}
                       for r in results]}
