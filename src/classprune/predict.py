"""Using an export: score image files with an exported model, preprocessed exactly as training saw them."""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import CheckpointError, DataError
from .export import DEPLOY_FILE, SPARSE
from .sparse import load_sparse


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def read_deploy(model_dir: str | Path) -> dict[str, Any]:
    model_dir = Path(model_dir)
    path = model_dir / DEPLOY_FILE
    if not path.is_file():
        raise CheckpointError(f"no exported model at {model_dir} ({DEPLOY_FILE} not found)")
    try:
        info = json.loads(path.read_text())
        size, mean, std, thr = int(info["image_size"]), info["mean"], info["std"], float(info["threshold"])
        if len(mean) != 3 or len(std) != 3 or size < 1:
            raise ValueError("mean/std need 3 channels")
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path} is corrupt ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    return info | {"image_size": size, "threshold": thr}


def preprocess(paths: list[Path], info: Mapping[str, Any]) -> torch.Tensor:
    """N x 3 x S x S floats exactly as training saw them: the cache's decode, /255, (x - mean) / std."""
    from .data.cache import decode

    images = np.stack([decode(str(p), info["image_size"]) for p in paths])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).to(torch.float32) / 255
    mean = torch.tensor(info["mean"], dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(info["std"], dtype=torch.float32).view(1, 3, 1, 1)
    return (x - mean) / std


def list_images(images: str | Path) -> list[Path]:
    images = Path(images)
    if images.is_file():
        return [images]
    if not images.is_dir():
        raise DataError(f"image folder not found: {images}")
    paths = sorted(p for p in images.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {images}")
    return paths


def predict(model_dir: str | Path, images: str | Path, batch: int = 64) -> list[tuple[Path, float, bool]]:
    """(path, positive-class probability, decision) per image, from the sparse fp32 file of an export."""
    info = read_deploy(model_dir)
    model = load_sparse(Path(model_dir) / SPARSE["fp32"][0])
    paths = list_images(images)
    x = preprocess(paths, info)  # every image decoded first: a corrupt one stops before any output
    scores = []
    with torch.no_grad():
        for start in range(0, len(paths), batch):
            scores.append(torch.softmax(model(x[start:start + batch]), dim=1)[:, 1])
    s = torch.cat(scores).tolist()
    return [(p, v, v >= info["threshold"]) for p, v in zip(paths, s)]
