"""The steps of the pipeline, one function per DVC stage. Stage scripts only parse arguments and call these.

Layout (the artifact contract): ``<seed dir>/<scenario>/round_<k>/`` holds ``weights.pt`` (trained),
``mask.pt`` (the mask used while training round k), ``rewound.pt`` (W0 masked by the next mask: the start
of round k+1) and ``next_mask.pt``. ``round_0`` holds W0 and the all-ones mask. The first seed's dir is
``models``; replicates use ``models/seed_<s>``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from . import io
from .config import Params
from .errors import DataError

PREPARED = Path("data/prepared")
SPLITS = Path("data/splits")
CACHE = Path("data/cache")
ROUNDS = Path("reports/rounds")
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

    @property
    def next_mask(self) -> Path:
        return self.dir / "next_mask.pt"


def round_paths(params: Params, scenario: str, seed: int, k: int) -> RoundPaths:
    return RoundPaths(params.seed_dir(seed) / scenario / f"round_{k}")


def metrics_path(method: str, seed: int, k: int | str) -> Path:
    return ROUNDS / f"seed_{seed}" / method / f"round_{k}.json"


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
            synthetic.generate(out / "synthetic", s.n_positive, s.n_negative, s.image_size, s.seed)
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
                        normalize=normalize)


def _loader(params: Params, split_name: str, *, train: bool, seed: int = 0):
    from .data.loader import make_loader

    batch = params.train.batch_size if train else params.train.eval_batch_size
    augment = params.data.augment if train else "none"
    # Per-image augmentation is cheap in a 1-thread worker but slow beside 2 training threads.
    workers = params.train.loader_workers if augment != "none" else 0
    return make_loader(CACHE, split_name, batch, train=train, augment=augment, seed=seed, num_workers=workers)


# --- lottery-ticket rounds --------------------------------------------------------------------------------

def pretrain(params: Params, out: Path = PRETRAINED_FEATURES) -> dict:
    """Learn W0's features once on the synthetic source task (model.pretrained: source); save them to ``out``."""
    from .pretrain import pretrain_features

    set_threads(params)
    p = params.pretrain
    result = pretrain_features(out, steps=p.steps, batch_size=p.batch_size, lr=p.lr, momentum=p.momentum,
                               grad_clip=p.grad_clip, n_per_class=p.n_per_class, image_size=p.image_size,
                               seed=p.seed)
    return {k: v for k, v in result.items() if k != "features"}


def build(params: Params, seed: int, state: dict | None = None,
          features_path: Path = PRETRAINED_FEATURES) -> torch.nn.Module:
    """The seeded network (W0), or, given a checkpoint ``state``, the network holding exactly that state."""
    from .model import build_model

    if state is None and params.model.pretrained == "source":
        from .pretrain import build_w0

        if not Path(features_path).is_file():
            raise DataError(f"{features_path} not found; run the pretrain stage first (model.pretrained: source)")
        return build_w0(io.load_torch(features_path), seed, params.model.dropout)
    if state is None:
        return build_model(params.model.pretrained, seed=seed, dropout=params.model.dropout)
    # Built on the meta device and filled from the checkpoint: no random init to throw away, and no
    # ImageNet weights to fetch in stages that only continue from saved weights.
    with torch.device("meta"):
        model = build_model("none", seed=seed, dropout=params.model.dropout)
    model.load_state_dict(state, assign=True)
    return model


def init(params: Params, scenario: str, seed: int) -> None:
    """W0 and the all-ones mask as round 0; W0 depends on the seed only, so every scenario shares it."""
    from .masks import full_mask, save_mask

    model = build(params, seed)
    out = round_paths(params, scenario, seed, 0)
    io.save_torch(out.rewound, model.state_dict())
    save_mask(full_mask(model, params.prune.include_biases), out.next_mask)


def train_round(params: Params, scenario: str, seed: int, k: int) -> dict:
    """Train round k from W0 masked by the mask of round k-1 with the scenario's loss."""
    from .data.loader import class_counts
    from .losses import ClassDependentLoss, resolve_gamma
    from .masks import load_mask, save_mask
    from .train import train_masked

    set_threads(params)
    sc = params.scenarios[scenario]
    prev = round_paths(params, scenario, seed, k - 1)
    out = round_paths(params, scenario, seed, k)
    mask = load_mask(prev.next_mask)
    model = build(params, seed, io.load_torch(prev.rewound))
    gamma = resolve_gamma(sc.gamma(k), class_counts(CACHE, "train"))
    loss = ClassDependentLoss(gamma, sc.lam, params.train.margin)
    torch.manual_seed(seed * 1000 + k)  # dropout
    t = params.train
    losses = train_masked(model, mask, _loader(params, "train", train=True, seed=seed * 1000 + k), loss,
                          t.iterations, t.lr, t.momentum, t.weight_decay, t.grad_clip, desc=f"{scenario} round {k}")
    io.save_torch(out.weights, model.state_dict())
    save_mask(mask, out.mask)
    return {"gamma": gamma, "final_loss": losses[-1]}


def prune_round(params: Params, scenario: str, seed: int, k: int) -> float:
    """Prune p of the remaining weights of round k and rewind the survivors to W0."""
    from .masks import load_mask, remaining, save_mask
    from .pruning import prune, rewind

    p = params.prune
    cur = round_paths(params, scenario, seed, k)
    w0 = io.load_torch(round_paths(params, scenario, seed, 0).rewound)
    new_mask = prune(io.load_torch(cur.weights), w0, load_mask(cur.mask), p.rate, p.scope, p.criterion)
    io.save_torch(cur.rewound, rewind(w0, new_mask))
    save_mask(new_mask, cur.next_mask)
    return remaining(new_mask)


def evaluate_model(params: Params, model: torch.nn.Module, mask: dict) -> dict:
    """Metrics on val and test separately (never pooled), plus the sparsity of ``mask``."""
    from .masks import remaining
    from .metrics import evaluate

    n_nonzero = sum(int((p != 0).sum()) for p in model.parameters())
    out = {"remaining": remaining(mask), "nonzero": n_nonzero}
    for split_name in ("val", "test"):
        out[split_name] = evaluate(model, _loader(params, split_name, train=False), desc=split_name)
    return out


def evaluate_round(params: Params, scenario: str, seed: int, k: int) -> dict:
    from .masks import load_mask

    set_threads(params)
    cur = round_paths(params, scenario, seed, k)
    model = build(params, seed, io.load_torch(cur.weights))
    result = {"method": scenario, "kind": "scenario", "seed": seed, "round": k,
              **evaluate_model(params, model, load_mask(cur.mask))}
    io.write_json(metrics_path(scenario, seed, k), result)
    return result
