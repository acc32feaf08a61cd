"""DataLoaders over the decoded cache: seeded shuffling for training, fixed order and no augmentation for eval."""
from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import DataLoader

from .augment import build_transform
from .cache import CachedDataset, load_split


def make_loader(
    cache_dir: str | os.PathLike,
    split: str,
    batch_size: int,
    *,
    train: bool,
    augment: str = "none",
    seed: int = 0,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A loader over one cached split; ``augment`` only applies when ``train`` is true. ``pin_memory`` (for a
    GPU) lets batches copy to the device asynchronously (``non_blocking``)."""
    cached = load_split(cache_dir, split)
    transform = build_transform(augment, cached.meta["image_size"]) if train else None
    dataset = CachedDataset(cached, transform)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        drop_last=False,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed) if train else None,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
    )


def class_counts(cache_dir: str | os.PathLike, split: str) -> list[int]:
    """Images per class [negative, positive] in a cached split, e.g. for class-balanced loss weights."""
    return np.bincount(load_split(cache_dir, split).labels, minlength=2).tolist()
