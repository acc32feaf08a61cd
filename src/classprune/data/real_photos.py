"""A small real-photograph check in the CRACK layout, cut from photographs that ship inside installed wheels.

Nothing is generated or downloaded: the photographs are the sample images bundled with scikit-image,
scikit-learn and matplotlib. The category of interest (``Positive/``) is *a brick wall*: patches of
scikit-image's ``brick`` photo (a rough surface crossed by thin, dark mortar joints, the nearest thing to
a crack that ships in a wheel). Negatives are half patches of the other rough grey surfaces (``grass``,
``gravel``) and half patches of every other bundled photo (people, animals, objects, a moon, a rocket).

Why it is learnable but not trivial: every patch is made grey and histogram-equalised to a random grey
range drawn alike for both classes (so its histogram is flat whatever the photo), and patch scale, position, flips and quarter turns
are jittered, so brightness, colour and contrast carry no label; only texture and structure do, and the
two other rough surfaces are close in texture. Caveat: all positives come from one 512 x 512 photograph,
so patches in the val/test splits overlap patches in train (a random split cannot keep them apart); the
check measures whether training learns a real visual category from few examples, not generalisation to
new walls.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ..errors import DataError
from ..io import atomic_path
from .synthetic import CLASS_DIRS

POSITIVE_PHOTOS = ("skimage:brick.png",)
TEXTURE_PHOTOS = ("skimage:grass.png", "skimage:gravel.png")
OTHER_PHOTOS = ("skimage:camera.png", "skimage:coffee.png", "skimage:astronaut.png", "skimage:chelsea.png",
                "skimage:coins.png", "skimage:moon.png", "skimage:rocket.jpg", "skimage:motorcycle_left.png",
                "skimage:ihc.png", "sklearn:china.jpg", "sklearn:flower.jpg", "matplotlib:grace_hopper.jpg")


def photo_path(ref: str) -> Path:
    """File of a bundled photograph ``package:name``; a one-line error when the package is missing."""
    package, name = ref.split(":")
    try:
        if package == "skimage":
            import skimage

            path = Path(skimage.__file__).parent / "data" / name
        elif package == "sklearn":
            import sklearn.datasets

            path = Path(sklearn.datasets.__file__).parent / "images" / name
        else:
            import matplotlib.cbook

            path = Path(matplotlib.cbook._get_data_path("sample_data", name))
    except ImportError:
        raise DataError(f"the real-photo check needs {package} installed (pip install scikit-image)") from None
    if not path.is_file():
        raise DataError(f"bundled photograph {name} not found at {path}")
    return path


def _grey(ref: str) -> np.ndarray:
    with Image.open(photo_path(ref)) as im:
        return np.asarray(im.convert("L"), np.float32)


def _patch(rng: np.random.Generator, photo: np.ndarray, size: int) -> np.ndarray:
    """A randomly placed, scaled, flipped and turned grey patch, standardised to a random mean/contrast."""
    h, w = photo.shape
    side = int(rng.uniform(0.1, 0.22) * min(h, w))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = Image.fromarray(photo[y : y + side, x : x + side]).resize((size, size), Image.BILINEAR)
    patch = np.rot90(np.asarray(crop, np.float64), rng.integers(4))
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    # Histogram-equalise (grey levels -> their ranks), then map to a random range: every patch of either
    # class has the same flat histogram, so no first-order intensity statistic carries the label.
    ranks = patch.ravel().argsort(kind="stable").argsort(kind="stable").reshape(patch.shape) / (patch.size - 1)
    low, high = rng.uniform(30, 90), rng.uniform(170, 230)
    patch = low + (high - low) * ranks
    return np.repeat(np.clip(np.rint(patch), 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def write_real_photo_set(out_dir: str | os.PathLike, seed: int = 0, n_positive: int = 180,
                         n_negative: int = 1620, image_size: int = 64) -> pd.DataFrame:
    """Write ``out_dir/Positive`` and ``out_dir/Negative`` (JPEG patches) atomically; return (path, label)."""
    if n_positive < 1 or n_negative < 2 or image_size < 16 or seed < 0:
        raise DataError(f"real-photo set needs n_positive >= 1, n_negative >= 2, image_size >= 16, seed >= 0; "
                        f"got {n_positive}, {n_negative}, {image_size}, {seed}")
    photos = {ref: _grey(ref) for ref in POSITIVE_PHOTOS + TEXTURE_PHOTOS + OTHER_PHOTOS}
    rng = np.random.default_rng(seed)
    n_texture = n_negative // 2
    sources = {
        1: [POSITIVE_PHOTOS[i % len(POSITIVE_PHOTOS)] for i in range(n_positive)],
        0: [TEXTURE_PHOTOS[i % len(TEXTURE_PHOTOS)] for i in range(n_texture)]
        + [OTHER_PHOTOS[i % len(OTHER_PHOTOS)] for i in range(n_negative - n_texture)],
    }
    out_dir = Path(out_dir)
    rows = []
    with atomic_path(out_dir, is_dir=True) as tmp:
        for label in (0, 1):
            (tmp / CLASS_DIRS[label]).mkdir()
            for index, ref in enumerate(sources[label]):
                name = f"{index:05d}.jpg"
                Image.fromarray(_patch(rng, photos[ref], image_size)).save(tmp / CLASS_DIRS[label] / name, quality=92)
                rows.append((str(out_dir / CLASS_DIRS[label] / name), label))
    return pd.DataFrame(rows, columns=["path", "label"])
