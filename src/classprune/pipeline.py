"""The steps of the pipeline, one function per DVC stage. Stage scripts only parse arguments and call these.

Layout (the artifact contract): ``models/<scenario>/seed_<s>/round_<k>/`` holds ``mask.pt`` (the mask
round k trains with), ``rewound.pt`` (the rewind point masked by that mask: the weights round k starts
from) and ``weights.pt`` (trained). ``round_0`` holds W0 as ``weights.pt`` and ``rewound.pt`` and the
all-ones mask. With late rewinding (``prune.rewind_iteration`` = j > 0), round 1 starts from W0 and its
``rewound.pt`` is the rewind point W_j; every later round starts from W_j masked.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from . import io
from .config import Params
from .device import log_device, state_to_cpu
from .errors import DataError

PREPARED = Path("data/prepared")
SPLITS = Path("data/splits")
CACHE = Path("data/cache")
ROUNDS = Path("reports/rounds")
MODELS = Path("models")
PRETRAINED_FEATURES = Path("models/pretrained/features.pt")


@dataclass(frozen=True)
class RoundPaths:
    dir: Path

    @property
    def weights(self) -> Path:
        return self.dir / "weights.pt"

    @property
    def mask(self) -> Path:
        return self.dir / "mask.pt"

    @property
    def rewound(self) -> Path:
        return self.dir / "rewound.pt"



def round_paths(params: Params, scenario: str, seed: int, k: int) -> RoundPaths:
    params.check_seed(seed)
    return RoundPaths(MODELS / scenario / f"seed_{seed}" / f"round_{k}")


def metrics_path(method: str, seed: int) -> Path:
    """One result file per (method, seed): every round of an LT chain, or every level of a baseline."""
    return ROUNDS / f"seed_{seed}" / f"{method}.json"


def declared_results(params: Params) -> list[Path]:
    """The result files the current dvc.yaml and params.yaml produce: what the report reads, nothing else."""
    methods = [*params.run.scenarios, *params.baselines.methods]
    return [metrics_path(m, s) for s in params.run.seeds for m in methods]


def stage_device(params: Params, stage: str, *, log: bool = True) -> torch.device:
    """``train.device`` resolved (auto: cuda when there is one), made deterministic and (``log``) logged once."""
    from .device import stage_device as _resolve

    return _resolve(params.train.device, stage, log=log)


def set_threads(params: Params) -> None:
    """CLASSPRUNE_THREADS (set by the parallel flow) wins over train.threads, so workers x threads fits the CPU."""
    n = int(os.environ.get("CLASSPRUNE_THREADS", params.train.threads) or 0)
    if n > 0:
        torch.set_num_threads(n)


# --- data -----------------------------------------------------------------------------------------------

def prepare(params: Params) -> None:
    """Generate the embedded synthetic data, or index the user's dataset, into data/prepared/index.csv."""
    from .data import sources, synthetic

    d = params.data
    with io.atomic_path(PREPARED, is_dir=True) as out:
        out.mkdir(parents=True, exist_ok=True)
        if d.source == "synthetic":
            s = d.synthetic
            synthetic.generate(out / "synthetic", s.n_positive, s.n_negative, s.image_size, s.seed, workers=d.workers)
            index = sources.index_crack(out / "synthetic")
            index["path"] = index["path"].map(lambda p: os.path.relpath(p, out).replace(os.sep, "/"))
            index["path"] = str(PREPARED) + "/" + index["path"]
        elif d.source == "crack":
            index = sources.index_crack(d.root)
        elif d.source == "folder":
            index = sources.index_folder(d.root, d.positive_class)
        else:
            i = d.isic
            index = sources.index_isic(i.train_images, i.train_csv, i.test_images, i.test_csv)
        index.to_csv(out / "index.csv", index=False)


def split(params: Params) -> None:
    import pandas as pd

    from .data import split as splitting

    d = params.data
    index_csv = PREPARED / "index.csv"
    if not index_csv.is_file():
        raise DataError(f"{index_csv} not found; run `dvc repro prepare` first")
    index = pd.read_csv(index_csv)
    if d.source == "isic":
        manifest = splitting.isic_split(index, d.val_fraction, d.split_seed)
    else:
        manifest = splitting.imbalanced_split(index, d.n_negative, d.n_positive, tuple(d.fractions),
                                              d.split_seed, d.take_all)
    splitting.write_manifest(manifest, SPLITS / "manifest.csv")


def cache(params: Params) -> None:
    from .data import cache as caching
    from .data import split as splitting

    normalize = "imagenet" if params.model.pretrained == "imagenet" else params.data.normalize
    caching.build_cache(splitting.read_manifest(SPLITS / "manifest.csv"), CACHE, params.data.image_size,
                        normalize=normalize, workers=params.data.workers)


def _loader(params: Params, split_name: str, *, train: bool, seed: int = 0, device: torch.device | None = None):
    from .data.loader import make_loader

    batch = params.train.batch_size if train else params.evaluate.batch_size
    augment = params.data.augment if train else "none"
    # Per-image augmentation is cheap in a 1-thread worker but slow beside 2 training threads.
    workers = params.train.loader_workers if augment != "none" else 0
    return make_loader(CACHE, split_name, batch, train=train, augment=augment, seed=seed, num_workers=workers,
                       pin_memory=device is not None and device.type == "cuda")


# --- lottery-ticket rounds --------------------------------------------------------------------------------

def pretrain(params: Params) -> dict:
    """Learn W0's features once on the synthetic source task (model.pretrained: source); save them to ``out``."""
    from .pretrain import pretrain_features

    set_threads(params)
    p = params.pretrain
    result = pretrain_features(PRETRAINED_FEATURES, steps=p.steps, batch_size=p.batch_size, lr=p.lr, momentum=p.momentum,
                               grad_clip=p.grad_clip, n_per_class=p.n_per_class, image_size=p.image_size,
                               seed=p.seed)
    return {k: v for k, v in result.items() if k != "features"}


def build(params: Params, seed: int, state: dict | None = None, device: torch.device | None = None,
          features_path: Path = PRETRAINED_FEATURES) -> torch.nn.Module:
    """The seeded network (W0), or, given a checkpoint ``state``, the network holding exactly that state; on
    ``device`` (default CPU). Initialised on the CPU either way, so W0 does not depend on the device."""
    from .model import build_model

    if state is None and params.model.pretrained == "source":
        from .pretrain import build_w0

        if not Path(features_path).is_file():
            raise DataError(f"{features_path} not found; run the pretrain stage first (model.pretrained: source)")
        return build_w0(io.load_torch(features_path), seed, params.model.dropout).to(device or "cpu")
    if state is None:
        return build_model(params.model.pretrained, seed=seed, dropout=params.model.dropout).to(device or "cpu")
    # Built on the meta device and filled from the checkpoint: no random init to throw away, and no
    # ImageNet weights to fetch in stages that only continue from saved weights.
    with torch.device("meta"):
        model = build_model("none", seed=seed, dropout=params.model.dropout)
    model.load_state_dict(state, assign=True)
    return model.to(device or "cpu")


def init(params: Params, scenario: str, seed: int) -> None:
    """Round 0 of a chain: W0 and the all-ones mask. W0 depends on the seed only: every scenario shares it."""
    from .masks import full_mask, save_mask

    model = build(params, seed)
    out = round_paths(params, scenario, seed, 0)
    state = state_to_cpu(model.state_dict())
    io.save_torch(out.weights, state)
    io.save_torch(out.rewound, state)
    save_mask(full_mask(model, params.prune.include_biases), out.mask)


def lt_round(params: Params, scenario: str, seed: int, k: int) -> dict:
    """One lottery-ticket round (open_lth's level k-1): prune round k-1 and rewind, then train round k.

    Round 1 trains the dense W0. Round k > 1 prunes ``prune.rate`` of the weights that survived round
    k-1 by the criterion against the rewind point, and rewinds the survivors to it. Nothing is written
    unless training finishes with finite weights.
    """
    from .data.loader import class_counts
    from .losses import ClassDependentLoss, resolve_gamma
    from .masks import load_mask, remaining, save_mask
    from .pruning import masked, prune
    from .train import train_masked

    set_threads(params)
    label = f"{scenario} seed {seed} round {k}"
    device = stage_device(params, label, log=False)
    p, t = params.prune, params.train
    prev, out = round_paths(params, scenario, seed, k - 1), round_paths(params, scenario, seed, k)
    start = io.load_torch(prev.rewound)
    mask = load_mask(prev.mask)
    if k > 1:
        mask = prune(io.load_torch(prev.weights), start, mask, p.rate, p.scope, p.criterion)
        start = {n: masked(v, mask[n]) if n in mask else v for n, v in start.items()}
    model = build(params, seed, {n: v.clone() for n, v in start.items()}, device)
    sc = params.scenarios[scenario]
    gamma = resolve_gamma(sc.gamma(k), class_counts(CACHE, "train"))
    loss = ClassDependentLoss(gamma, sc.lam, t.margin).to(device)
    torch.manual_seed(seed * 1000 + k)  # dropout
    loader = _loader(params, "train", train=True, seed=seed * 1000 + k, device=device)
    log_device(device, label)  # once the inputs are open: a missing one fails with one line
    snapshot: dict = {}
    late = p.rewind_iteration if k == 1 and p.rewind_iteration > 0 else None
    losses = train_masked(model, mask, loader, loss, t.iterations, **t.sgd(), desc=label,
                          on_step=(lambda step, m: snapshot.update({n: v.detach().cpu().clone() for n, v in m.state_dict().items()}) if step == late
                                   else None) if late else None)
    if late:
        start = snapshot
    io.save_torch(out.rewound, start)
    save_mask(mask, out.mask)
    io.save_torch(out.weights, state_to_cpu(model.state_dict()))
    return {"gamma": gamma, "final_loss": losses[-1], "remaining": remaining(mask)}


def evaluate_model(params: Params, model: torch.nn.Module, mask: dict) -> dict:
    """Metrics on val and test separately (never pooled), plus the sparsity of ``mask``.

    Besides the argmax decision (the paper's), an operating point: the threshold on the positive-class
    log-odds chosen on val (``evaluate.target_fnr``), then applied unchanged to test.
    """
    from .masks import remaining
    from .metrics import binary_metrics, operating_threshold, predict

    n_nonzero = sum(int((p != 0).sum()) for p in model.parameters())
    device = next(model.parameters()).device
    out = {"remaining": remaining(mask), "nonzero": n_nonzero}
    preds = {s: predict(model, _loader(params, s, train=False, device=device), desc=s) for s in ("val", "test")}
    threshold = operating_threshold(*preds["val"][:2], params.evaluate.target_fnr)
    out["threshold"] = threshold
    for split_name, (labels, scores, argmax) in preds.items():
        out[split_name] = binary_metrics(labels, scores, argmax)
        at_op = (scores >= threshold).astype(int) if threshold is not None else argmax
        out[split_name]["op"] = binary_metrics(labels, scores, at_op)
    return out


def evaluate_chain(params: Params, scenario: str, seed: int) -> dict:
    """Every round of one scenario x seed chain in one process: metrics code changes never retrain."""
    from .masks import load_mask

    set_threads(params)
    label = f"evaluate {scenario} seed {seed}"
    device = stage_device(params, label, log=False)
    rounds, paths = [], [round_paths(params, scenario, seed, r.k) for r in params.prune.rounds]
    states = [(r.k, io.load_torch(cur.weights), load_mask(cur.mask)) for r, cur in zip(params.prune.rounds, paths)]
    log_device(device, label)
    for k, state, mask in states:
        rounds.append({"round": k, **evaluate_model(params, build(params, seed, state, device), mask)})
    result = {"method": scenario, "kind": "scenario", "seed": seed, "rounds": rounds}
    io.write_json(metrics_path(scenario, seed), result)
    return {"method": scenario, "seed": seed,
            "test_auc": [r["test"]["auc"] for r in rounds], "test_fnr": [r["test"]["fnr"] for r in rounds]}
