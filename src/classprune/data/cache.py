"""Decoded image cache: JPEGs are decoded and resized once, then every training round reads uint8 memmaps.

Layout of a cache directory::

    <split>_images.npy   uint8  N x H x W x 3   (read with mmap, so 224 px x 24k images never sit in RAM)
    <split>_labels.npy   int64  N
    meta.json            image_size, counts, channel mean/std, manifest_sha256
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from numpy.lib.format import open_memmap

from ..errors import DataError
from ..io import atomic_path, read_json, write_json
from .decode import decode, decode_chunk  # noqa: F401 - decode is part of this module's API
from .parallel import run_chunks

if TYPE_CHECKING:  # pandas and the split module are for the cache stage; training only reads memmaps
    import pandas as pd

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZE = ("train", "imagenet")
CHUNK = 256
MISSING_HINT = "run the cache stage first (dvc repro cache)"


def manifest_sha256(manifest: pd.DataFrame) -> str:
    """Fingerprint of the manifest rows in order (the cache stores images in that order)."""
    rows = manifest["path"].astype(str) + "," + manifest["label"].astype(str) + "," + manifest["split"].astype(str)
    return hashlib.sha256(rows.str.cat(sep="\n").encode()).hexdigest()


def build_cache(
    manifest_df: pd.DataFrame,
    out_dir: str | os.PathLike,
    image_size: int,
    normalize: str = "train",
    *,
    workers: int | None = None,
) -> dict[str, Any]:
    """Decode every split of the manifest into ``out_dir`` (atomically); return the meta dict.

    ``workers`` processes decode fixed chunks straight into the memmap (None or 0: one per core); the
    cache is byte-identical whatever their number, and memory stays at a few images per worker."""
    from .split import SPLITS, validate_manifest

    manifest = validate_manifest(manifest_df)
    if normalize not in NORMALIZE:
        raise DataError(f"unknown normalization {normalize!r}; choose one of: {', '.join(NORMALIZE)}")
    if int(image_size) < 1:
        raise DataError(f"image_size must be positive, got {image_size}")
    image_size = int(image_size)
    for split in SPLITS:
        if not (manifest["split"] == split).any():
            raise DataError(f"split {split!r} is empty in the manifest; every split needs images (check data.fractions)")
    meta: dict[str, Any] = {
        "image_size": image_size,
        "normalize": normalize,
        "splits": list(SPLITS),
        "counts": {},
        "manifest_sha256": manifest_sha256(manifest),
    }
    with atomic_path(out_dir, is_dir=True) as tmp:
        for split in SPLITS:
            rows = manifest[manifest["split"] == split]
            labels = rows["label"].to_numpy(np.int64)
            stats = _ChannelStats() if split == "train" and normalize == "train" else None
            _decode_split(rows["path"].tolist(), tmp / f"{split}_images.npy", image_size, workers, split, stats)
            np.save(tmp / f"{split}_labels.npy", labels)
            n_pos = int(labels.sum())
            meta["counts"][split] = {"total": len(labels), "negative": len(labels) - n_pos, "positive": n_pos}
            if stats is not None:
                meta["mean"], meta["std"] = stats.result()
        if normalize == "imagenet":
            meta["mean"], meta["std"] = list(IMAGENET_MEAN), list(IMAGENET_STD)
        write_json(tmp / "meta.json", meta)
    return meta


def _decode_split(paths, target: Path, image_size: int, workers: int | None, split: str, stats) -> None:
    """Create the memmap (a sparse file: nothing is held in RAM), then let the workers fill it CHUNK images at
    a time; channel histograms come back per chunk."""
    open_memmap(target, mode="w+", dtype=np.uint8, shape=(len(paths), image_size, image_size, 3)).flush()
    starts = range(0, len(paths), CHUNK)
    chunks = [(str(target), s, paths[s : s + CHUNK], image_size, stats is not None) for s in starts]
    for hist in run_chunks(decode_chunk, chunks, workers, f"cache {split}", [len(c[2]) for c in chunks]):
        if stats is not None:
            stats.add(hist)


class _ChannelStats:
    """Per-channel mean/std in [0, 1] units from exact integer histograms: the same bits whatever the chunking."""

    def __init__(self) -> None:
        self.hist = np.zeros((3, 256), np.int64)

    def add(self, hist: np.ndarray) -> None:
        self.hist += hist

    def result(self) -> tuple[list[float], list[float]]:
        values = np.arange(256, dtype=np.int64)
        n = self.hist[0].sum()
        total = (self.hist * values).sum(1)  # exact: at most 255 per pixel, 255^2 for squares
        squares = (self.hist * values**2).sum(1)
        mean = total / (255.0 * n)
        std = np.sqrt(np.maximum(squares / (255.0**2 * n) - mean**2, 0)) + 1e-8
        return mean.tolist(), std.tolist()


@dataclass
class CachedSplit:
    """One split of the cache; images are a read-only memmap that survives pickling to DataLoader workers."""

    cache_dir: Path
    split: str
    images: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    meta: dict[str, Any] = field(repr=False)

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self) -> dict[str, Any]:
        # Pickling a memmap copies the whole array; reopen it in the worker instead.
        state = dict(self.__dict__)
        state["images"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.images = np.load(self.cache_dir / f"{self.split}_images.npy", mmap_mode="r")


def load_split(cache_dir: str | os.PathLike, split: str) -> CachedSplit:
    """Open one split of a cache built by :func:`build_cache`."""
    cache_dir = Path(cache_dir)
    meta_path = cache_dir / "meta.json"
    if not meta_path.is_file():
        raise DataError(f"no decoded image cache at {cache_dir}; {MISSING_HINT}")
    meta = read_json(meta_path)
    if split not in meta.get("splits", []):
        raise DataError(f"cache {cache_dir} has no split {split!r}; available: {', '.join(meta.get('splits', []))}")
    images_path, labels_path = cache_dir / f"{split}_images.npy", cache_dir / f"{split}_labels.npy"
    if not images_path.is_file() or not labels_path.is_file():
        raise DataError(f"cache {cache_dir} is incomplete (no {split} arrays); {MISSING_HINT}")
    try:
        images = np.load(images_path, mmap_mode="r")
        labels = np.load(labels_path)
    except (OSError, ValueError) as exc:
        raise DataError(f"cache {cache_dir} is corrupt ({str(exc).splitlines()[0]}); {MISSING_HINT}") from None
    size = meta["image_size"]
    if images.shape != (len(labels), size, size, 3) or images.dtype != np.uint8:
        raise DataError(f"cache {cache_dir} is corrupt ({split} images shape {images.shape}); {MISSING_HINT}")
    return CachedSplit(cache_dir, split, images, labels, meta)


class CachedDataset(torch.utils.data.Dataset):
    """(normalised float C x H x W tensor, int label) pairs; the transform sees the uint8 image first."""

    def __init__(self, split: CachedSplit, transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.split = split
        self.transform = transform
        self.mean = torch.tensor(split.meta["mean"], dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(split.meta["std"], dtype=torch.float32).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = torch.from_numpy(np.array(self.split.images[i])).permute(2, 0, 1)  # copy: memmap is read-only
        if self.transform is not None:
            image = self.transform(image)
        image = image.to(torch.float32) / 255 if image.dtype == torch.uint8 else image.to(torch.float32)
        return (image - self.mean) / self.std, int(self.split.labels[i])
