import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from classprune.data import synthetic
from classprune.data.cache import CachedDataset, build_cache, load_split, manifest_sha256
from classprune.data.loader import class_counts, make_loader
from classprune.data.sources import index_crack
from classprune.data.split import imbalanced_split
from classprune.errors import DataError


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn") / "crack"
    synthetic.generate(root, n_positive=20, n_negative=40, image_size=48, seed=0, fmt="jpg")
    return imbalanced_split(index_crack(root), n_negative=40, n_positive=20, seed=0)


@pytest.fixture(scope="module")
def cache_dir(manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("c") / "cache"
    build_cache(manifest, out, 32)
    return out


def test_round_trip_equals_pil(manifest, cache_dir):
    meta = json.loads((cache_dir / "meta.json").read_text())
    assert meta["image_size"] == 32
    assert meta["counts"]["train"] == {"total": 42, "negative": 28, "positive": 14}
    assert meta["manifest_sha256"] == manifest_sha256(manifest)
    for split in ("train", "val", "test"):
        rows = manifest[manifest["split"] == split]
        cached = load_split(cache_dir, split)
        assert isinstance(cached.images, np.memmap) and cached.images.dtype == np.uint8
        assert cached.images.shape == (len(rows), 32, 32, 3)
        assert cached.labels.dtype == np.int64 and cached.labels.tolist() == rows["label"].tolist()
        for i in (0, len(rows) - 1):
            with Image.open(rows["path"].iloc[i]) as im:
                expected = np.asarray(im.convert("RGB").resize((32, 32), Image.BILINEAR))
            np.testing.assert_array_equal(cached.images[i], expected)


def test_mean_std_from_train(manifest, cache_dir):
    train = load_split(cache_dir, "train")
    pixels = np.asarray(train.images, np.float64).reshape(-1, 3) / 255
    np.testing.assert_allclose(train.meta["mean"], pixels.mean(0), atol=1e-6)
    np.testing.assert_allclose(train.meta["std"], pixels.std(0), atol=1e-6)


def test_imagenet_normalization(manifest, tmp_path):
    meta = build_cache(manifest, tmp_path / "c", 16, normalize="imagenet")
    assert meta["mean"] == [0.485, 0.456, 0.406] and meta["std"] == [0.229, 0.224, 0.225]


def test_dataset_and_loaders(cache_dir):
    ds = CachedDataset(load_split(cache_dir, "val"))
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y in (0, 1)
    mean = torch.tensor(ds.split.meta["mean"]).view(3, 1, 1)
    std = torch.tensor(ds.split.meta["std"]).view(3, 1, 1)
    raw = torch.from_numpy(np.array(ds.split.images[0])).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(x, (raw - mean) / std)

    ev = make_loader(cache_dir, "val", 4, train=False, augment="isic")
    assert ev.dataset.transform is None  # eval never augments
    assert torch.cat([b[1] for b in ev]).tolist() == load_split(cache_dir, "val").labels.tolist()

    def order(seed):
        return torch.cat([b[1] for b in make_loader(cache_dir, "train", 8, train=True, seed=seed)]).tolist()

    assert order(1) == order(1) and len(order(1)) == 42
    tr = make_loader(cache_dir, "train", 8, train=True, augment="isic", seed=0)
    xb, yb = next(iter(tr))
    assert xb.shape == (8, 3, 32, 32)
    assert class_counts(cache_dir, "train") == [28, 14]


def test_pickled_split_reopens_memmap(cache_dir):
    import pickle

    split = load_split(cache_dir, "test")
    clone = pickle.loads(pickle.dumps(split))
    assert len(pickle.dumps(split)) < split.images.nbytes
    np.testing.assert_array_equal(clone.images, split.images)


def test_corrupt_image_leaves_no_cache(manifest, tmp_path):
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"definitely not a jpeg")
    m = manifest.copy()
    m.loc[m.index[-1], "path"] = str(bad)
    out = tmp_path / "cache"
    with pytest.raises(DataError, match=r"cannot decode image .*x\.jpg"):
        build_cache(m, out, 32)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.jpg"]


def test_empty_split_and_missing_cache(manifest, tmp_path):
    with pytest.raises(DataError, match="'test' is empty"):
        build_cache(manifest[manifest["split"] != "test"], tmp_path / "c", 16)
    assert not (tmp_path / "c").exists()
    with pytest.raises(DataError, match="dvc repro cache"):
        load_split(tmp_path / "nothing", "train")
    with pytest.raises(DataError, match="dvc repro cache"):
        make_loader(tmp_path / "nothing", "train", 4, train=True)
