"""Synthetic CRACK-like data set, so the whole pipeline runs offline and deterministically in minutes.

Images are grey concrete-like textures (multi-scale noise, pores, stains, uneven light). Positives carry
thin, irregular crack curves; most negatives carry joints, scratches or dark stains drawn from the *same*
darkness range, and some positives carry them too, so shape and not darkness separates the classes (the
darkest pixel alone ranks test images at AUC <= 0.75, see ``darkest_pixel_auc``).

The same texture machinery makes the multi-class *source* task that pretrains W0's features
(``render_source``): oriented straight lines, blobs, grids, fine speckle and stains, never cracks.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

from ..errors import DataError
from ..io import atomic_path
from .parallel import run_chunks

CLASS_DIRS = {0: "Negative", 1: "Positive"}
_FORMATS = {"png": ("png", {"optimize": False}), "jpg": ("jpg", {"quality": 95}), "jpeg": ("jpg", {"quality": 95})}
# Fractions of negatives / positives that carry distractors (joints, scratches, stains).
DISTRACTOR_FRACTION = 0.85
POSITIVE_DISTRACTOR_FRACTION = 0.25
# Darkening depth of cracks and distractors alike: overlapping contrast, so darkness is no shortcut.
DEPTH_RANGE = (0.18, 0.45)
CHUNK = 64  # images per unit of parallel work


def generate(
    out_dir: str | os.PathLike,
    n_positive: int,
    n_negative: int,
    image_size: int = 64,
    seed: int = 0,
    fmt: str = "png",
    *,
    workers: int | None = 1,
) -> pd.DataFrame:
    """Write ``out_dir/Positive`` and ``out_dir/Negative`` atomically; return the (path, label) index.

    ``workers`` processes render fixed chunks of images (None or 0: one per core); every image is seeded by
    (seed, label, index), so the files are byte-identical whatever the number of workers."""
    if fmt.lower() not in _FORMATS:
        raise DataError(f"unknown synthetic image format {fmt!r}; choose one of: {', '.join(_FORMATS)}")
    if n_positive < 0 or n_negative < 0 or image_size < 16 or seed < 0:
        raise DataError(
            f"synthetic data needs n_positive, n_negative >= 0, image_size >= 16 and seed >= 0; got "
            f"{n_positive}, {n_negative}, {image_size}, {seed}"
        )
    ext, save_kwargs = _FORMATS[fmt.lower()]
    out_dir = Path(out_dir)
    rows = []
    chunks = []
    with atomic_path(out_dir, is_dir=True) as tmp:
        for label, count in ((0, n_negative), (1, n_positive)):
            class_dir = tmp / CLASS_DIRS[label]
            class_dir.mkdir()
            for start in range(0, count, CHUNK):
                chunks.append((str(class_dir), ext, save_kwargs, image_size, seed, label, start, min(count, start + CHUNK)))
            rows += [(str(out_dir / CLASS_DIRS[label] / f"{index:05d}.{ext}"), label) for index in range(count)]
        for _ in run_chunks(_write_chunk, chunks, workers, "synthetic", [c[-1] - c[-2] for c in chunks]):
            pass
    return pd.DataFrame(rows, columns=["path", "label"])


def _write_chunk(class_dir: str, ext: str, save_kwargs: dict, image_size: int, seed: int, label: int,
                 start: int, stop: int) -> None:
    """Render and save images start..stop-1 of one class (a worker's unit of work)."""
    for index in range(start, stop):
        Image.fromarray(render(image_size, seed, label, index)).save(Path(class_dir) / f"{index:05d}.{ext}", **save_kwargs)


def render(image_size: int, seed: int, label: int, index: int) -> np.ndarray:
    """One H x W x 3 uint8 image; its RNG depends only on (seed, label, index), not on the counts."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, label, index]))
    size = image_size
    grey = _concrete(rng, size)
    dark = np.zeros((size, size))
    if label == 1:
        dark = _cracks(rng, size)
    if rng.random() < (POSITIVE_DISTRACTOR_FRACTION if label == 1 else DISTRACTOR_FRACTION):
        dark = np.maximum(dark, _distractors(rng, size))
    grey -= dark
    tint = np.array([1.02, 1.0, 0.97]) + rng.uniform(-0.02, 0.02, 3)
    rgb = grey[..., None] * tint
    return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)


def _concrete(rng: np.random.Generator, size: int) -> np.ndarray:
    """Grey level in [0, 1]: noise octaves + stains + pores + an illumination gradient."""
    noise = np.zeros((size, size), np.float32)
    for octave, weight in zip((16, 8, 4, 2, 1), (1.0, 0.7, 0.5, 0.45, 0.4)):
        cells = max(2, size // octave)
        coarse = rng.standard_normal((cells, cells)).astype(np.float32)
        noise += weight * np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC))
    noise /= noise.std() + 1e-6
    grey = rng.uniform(0.45, 0.7) + rng.uniform(0.03, 0.07) * noise.astype(np.float64)

    yy, xx = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    angle = rng.uniform(0, 2 * np.pi)
    grey += rng.uniform(0, 0.12) * (np.cos(angle) * xx + np.sin(angle) * yy) / 2

    stains = Image.new("L", (size, size))
    draw = ImageDraw.Draw(stains)
    for _ in range(rng.poisson(1.2)):
        cx, cy = rng.uniform(0, size, 2)
        rx, ry = size * rng.uniform(0.08, 0.3, 2)
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=int(rng.integers(60, 256)))
    stains = stains.filter(ImageFilter.GaussianBlur(size * 0.06))
    grey -= rng.uniform(0.03, 0.08) * np.asarray(stains, np.float64) / 255

    pores = Image.new("L", (size, size))
    draw = ImageDraw.Draw(pores)
    scale = size / 64
    for _ in range(rng.poisson(20)):  # same pore density at any resolution
        cx, cy = rng.uniform(0, size, 2)
        r = scale * rng.uniform(0.4, 1.4)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=int(rng.integers(80, 256)))
    pores = pores.filter(ImageFilter.GaussianBlur(0.5 * scale))
    grey -= 0.25 * np.asarray(pores, np.float64) / 255
    return grey


def _cracks(rng: np.random.Generator, size: int) -> np.ndarray:
    """Darkening map of 1-2 irregular cracks (with an occasional branch)."""
    paths = [_random_walk(rng, size, rng.uniform(0.2 * size, 0.8 * size, 2), rng.uniform(0, 2 * np.pi), 1.6 * size)]
    if rng.random() < 0.3:
        paths.append(_random_walk(rng, size, rng.uniform(0, size, 2), rng.uniform(0, 2 * np.pi), 1.2 * size))
    if rng.random() < 0.4:
        trunk = paths[0]
        start = trunk[rng.integers(len(trunk))]
        paths.append(_random_walk(rng, size, start, rng.uniform(0, 2 * np.pi), 0.4 * size, both_ways=False))
    scale = size / 64
    dark = np.zeros((size, size))
    for points in paths:
        n_seg = len(points) - 1
        # Width and depth drift smoothly along the crack, as real cracks open and close.
        width = np.clip(rng.uniform(1.5, 3) + np.cumsum(rng.normal(0, 0.25, n_seg)), 1.5, 3) * scale
        depth = np.clip(rng.uniform(*DEPTH_RANGE) + np.cumsum(rng.normal(0, 0.03, n_seg)), *DEPTH_RANGE)
        dark = np.maximum(dark, _polyline(points, width, depth, size))
    return dark


def _distractors(rng: np.random.Generator, size: int) -> np.ndarray:
    """Straight joints, short scratches or dark stains, as dark as cracks: only their shape differs."""
    scale = size / 64
    kind = rng.integers(3)
    if kind == 0:  # a formwork joint straight across the image
        angle = rng.choice([0, np.pi / 2]) + rng.normal(0, 0.1)
        centre = rng.uniform(0.2 * size, 0.8 * size, 2)
        offset = 0.8 * size * np.array([np.cos(angle), np.sin(angle)])
        points = np.stack([centre - offset, centre + offset])
        return _polyline(points, np.full(1, rng.uniform(1, 3) * scale), np.full(1, rng.uniform(*DEPTH_RANGE)), size)
    if kind == 1:  # one to three short straight scratches
        dark = np.zeros((size, size))
        for _ in range(rng.integers(1, 4)):
            angle = rng.uniform(0, np.pi)
            centre = rng.uniform(0, size, 2)
            offset = rng.uniform(0.1, 0.3) * size * np.array([np.cos(angle), np.sin(angle)])
            points = np.stack([centre - offset, centre + offset])
            dark = np.maximum(dark, _polyline(points, np.full(1, rng.uniform(1, 2) * scale),
                                              np.full(1, rng.uniform(*DEPTH_RANGE)), size))
        return dark
    return _blobs(rng, size, rng.integers(1, 4), (0.04, 0.12), rng.uniform(*DEPTH_RANGE))  # compact stains


def _blobs(rng, size, count, radius, depth, blur=0.015) -> np.ndarray:
    """Darkening of ``count`` soft ellipses (radii a fraction of the size) of peak ``depth``."""
    canvas = Image.new("L", (size, size))
    draw = ImageDraw.Draw(canvas)
    for _ in range(count):
        cx, cy = rng.uniform(0.1 * size, 0.9 * size, 2)
        rx, ry = size * rng.uniform(*radius, 2)
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    canvas = canvas.filter(ImageFilter.GaussianBlur(max(0.5, size * blur)))
    return depth * np.asarray(canvas, np.float64) / 255


def _random_walk(rng, size, start, heading, length, both_ways=True) -> np.ndarray:
    """Vertices of a jittered random walk through ``start`` (both directions unless ``both_ways`` is off)."""
    step = size * rng.uniform(0.04, 0.07)
    n = int(np.ceil(length / step / (2 if both_ways else 1)))
    arms = []
    for direction in (0.0, np.pi) if both_ways else (0.0,):
        angles = heading + direction + np.cumsum(rng.normal(0, 0.2, n))
        steps = step * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        steps += rng.normal(0, 0.15 * step, steps.shape)
        arms.append(start + np.cumsum(steps, axis=0))
    if both_ways:
        return np.concatenate([arms[1][::-1], start[None], arms[0]])
    return np.concatenate([start[None], arms[0]])


def _polyline(points: np.ndarray, width: np.ndarray, depth: np.ndarray, size: int, supersample: int = 4) -> np.ndarray:
    """Darkening of a polyline with per-segment width/depth, drawn supersampled so thin lines are antialiased."""
    canvas = Image.new("L", (size * supersample, size * supersample))
    draw = ImageDraw.Draw(canvas)
    points = points * supersample
    for a, b, w, d in zip(points[:-1], points[1:], width * supersample, depth):
        fill = int(round(255 * d))
        draw.line([tuple(a), tuple(b)], fill=fill, width=max(1, int(round(w))))
        draw.ellipse([b[0] - w / 2, b[1] - w / 2, b[0] + w / 2, b[1] + w / 2], fill=fill)  # round joints
    return np.asarray(canvas.resize((size, size), Image.BOX), np.float64) / 255


# --- shortcut check ---------------------------------------------------------------------------------------

def darkest_pixel_auc(images: np.ndarray, labels: np.ndarray) -> float:
    """Test AUC of the one-number shortcut "how dark is the darkest pixel" (score = -min grey value).

    A task that this feature solves measures darkness, not crack shape; the harder target keeps it <= 0.75.
    """
    from sklearn.metrics import roc_auc_score

    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim not in (3, 4) or len(images) != len(labels) or len(np.unique(labels)) != 2:
        raise ValueError(f"need N x H x W (x C) images and N labels of both classes; got {images.shape}, "
                         f"{labels.shape} with classes {np.unique(labels).tolist()}")
    grey = images.astype(np.float64)
    if grey.ndim == 4:
        grey = grey.mean(axis=-1)
    return float(roc_auc_score(labels, -grey.reshape(len(grey), -1).min(axis=1)))


# --- source task for pretraining -----------------------------------------------------------------------------

SOURCE_CLASSES = ("lines_0", "lines_45", "lines_90", "lines_135", "blobs", "grid", "speckle", "stains")


def render_source(image_size: int, seed: int, index: int) -> tuple[np.ndarray, int]:
    """One image of the 8-class source task and its class (``index % 8``); never a crack.

    The classes need orientation, spacing and blob/texture detectors, generic features that a crack
    detector can reuse without having seen a crack (the role ImageNet plays for the paper).
    """
    label = index % len(SOURCE_CLASSES)
    # A stream apart from the target's (seed, label, index) streams: a leading tag no target call uses.
    rng = np.random.default_rng(np.random.SeedSequence([7_777_777, seed, index]))
    size, scale = image_size, image_size / 64
    grey = _concrete(rng, size)
    depth = rng.uniform(*DEPTH_RANGE)
    if label < 4:  # parallel straight lines at 0 / 45 / 90 / 135 degrees (+- 8)
        dark = _lines(rng, size, label * np.pi / 4 + rng.normal(0, 0.07), rng.integers(1, 4), depth, scale)
    elif label == 4:
        dark = _blobs(rng, size, rng.integers(3, 8), (0.03, 0.08), depth)
    elif label == 5:
        angle = rng.uniform(0, np.pi / 2)
        dark = np.maximum(_lines(rng, size, angle, rng.integers(2, 4), depth, scale),
                          _lines(rng, size, angle + np.pi / 2, rng.integers(2, 4), depth, scale))
    elif label == 6:
        fine = rng.standard_normal((size, size))
        dark = np.clip(depth * 0.6 * fine, 0, None)
    else:
        dark = _blobs(rng, size, rng.integers(1, 3), (0.2, 0.4), depth * 0.7, blur=0.08)
    grey -= dark
    rgb = grey[..., None] * (np.array([1.02, 1.0, 0.97]) + rng.uniform(-0.02, 0.02, 3))
    return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8), label


def source_set(n_per_class: int, image_size: int = 64, seed: int = 0, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n_per_class`` images of every source class as (N x H x W x 3 uint8, N int64 labels)."""
    if n_per_class < 1 or image_size < 16:
        raise DataError(f"source set needs n_per_class >= 1 and image_size >= 16; got {n_per_class}, {image_size}")
    n = n_per_class * len(SOURCE_CLASSES)
    pairs = [render_source(image_size, seed, start + i) for i in range(n)]
    return np.stack([p[0] for p in pairs]), np.array([p[1] for p in pairs], np.int64)


def _lines(rng, size, angle, count, depth, scale) -> np.ndarray:
    """``count`` parallel straight lines across the image at ``angle``, evenly spaced with jitter."""
    direction = np.array([np.cos(angle), np.sin(angle)])
    normal = np.array([-direction[1], direction[0]])
    centre = np.full(2, size / 2) + rng.uniform(-0.1, 0.1, 2) * size
    spacing = rng.uniform(0.15, 0.3) * size
    dark = np.zeros((size, size))
    for i in range(count):
        c = centre + normal * spacing * (i - (count - 1) / 2 + rng.normal(0, 0.1))
        points = np.stack([c - 0.8 * size * direction, c + 0.8 * size * direction])
        dark = np.maximum(dark, _polyline(points, np.full(1, rng.uniform(1, 2.5) * scale), np.full(1, depth), size))
    return dark
