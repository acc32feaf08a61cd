"""Decoding one image file, and a chunk of them into the cache's memmap: the cache stage's worker code.

Kept apart from cache.py (which needs torch for the Dataset) so decoding processes start light.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from ..errors import DataError


def decode(path: str, image_size: int) -> np.ndarray:
    """Decode one image to RGB uint8 image_size x image_size (bilinear; PIL antialiases when shrinking)."""
    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB").resize((image_size, image_size), Image.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"cannot decode image {path}: {reason}") from None


def decode_chunk(target: str, start: int, paths: list[str], image_size: int, histogram: bool) -> np.ndarray | None:
    """Decode ``paths`` into rows start.. of the .npy memmap ``target``; with ``histogram``, return the
    per-channel counts of every uint8 value (3 x 256), from which exact channel sums follow whatever the
    chunking. Memory: one image at a time, the written pages are unmapped at the end."""
    images = np.load(target, mmap_mode="r+")
    hist = np.zeros((3, 256), np.int64) if histogram else None
    for i, path in enumerate(paths):
        image = decode(path, image_size)
        images[start + i] = image
        if hist is not None:
            for c in range(3):
                hist[c] += np.bincount(image[..., c].ravel(), minlength=256)
    images.flush()
    del images
    return hist
