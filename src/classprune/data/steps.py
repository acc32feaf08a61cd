"""The data steps of the pipeline: index or generate the images, split them, decode them once into the cache."""
from __future__ import annotations

import os
from pathlib import Path

from .. import io
from ..config import Params
from ..errors import DataError
from ..paths import CACHE, PREPARED, SPLITS


def prepare(params: Params) -> None:
    """Generate the embedded synthetic data, or index the user's dataset, into data/prepared/index.csv."""
    from . import sources, synthetic

    d = params.data
    with io.atomic_path(PREPARED, is_dir=True) as out:
        out.mkdir(parents=True, exist_ok=True)
        if d.source == "synthetic":
            s = d.synthetic
            extra = s.eval_only
            synthetic.generate(out / "synthetic", s.n_positive + extra.n_positive, s.n_negative + extra.n_negative,
                               s.image_size, s.seed, workers=d.workers)
            index = sources.index_crack(out / "synthetic")
            if extra.n_positive or extra.n_negative:  # images rendered past the counts serve val and test only
                number = index["path"].map(lambda p: int(Path(p).stem))
                index["eval_only"] = number >= index["label"].map({0: s.n_negative, 1: s.n_positive})
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

    from . import split as splitting

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
    from . import cache as caching
    from . import split as splitting

    normalize = "imagenet" if params.model.pretrained == "imagenet" else params.data.normalize
    caching.build_cache(splitting.read_manifest(SPLITS / "manifest.csv"), CACHE, params.data.image_size,
                        normalize=normalize, workers=params.data.workers)
