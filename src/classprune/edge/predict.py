"""Using an export: score image files with an exported model, preprocessed exactly as training saw them.

The default path is the device's: an ONNX file of the export in onnxruntime, at that file's own threshold
(deploy.json ``onnx.<precision>``); ``runtime="torch"`` scores the sparse fp32 file in PyTorch instead, at
the fp32 file's threshold. A channel export (``deploy.json`` ``granularity: channel``, the compact network of
:mod:`classprune.edge.compaction`) has fp32 and int8 ONNX files only; a deploy.json without ``granularity`` is a
weight export's.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .compaction import EXPORT_CHANNEL_DIR, INDEX_FILE
from .compaction import PRECISIONS as CHANNEL_PRECISIONS
from ..errors import CheckpointError, DataError
from .export import DEPLOY_FILE, EXPORT_DIR, SPARSE
from ..paths import GRANULARITIES
from .sparse import load_sparse

PRECISIONS = ("fp32", "fp16", "int8")
EXPORT_ROOTS = {"weight": EXPORT_DIR, "channel": EXPORT_CHANNEL_DIR}


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


def granularity_of(info: Mapping[str, Any]) -> str:
    """What an export holds: ``weight`` (sparse + ONNX, the default of older exports) or ``channel``."""
    return info.get("granularity", "weight")


def check_granularity(granularity: str | None) -> None:
    if granularity is not None and granularity not in GRANULARITIES:
        raise DataError(f"unknown granularity {granularity!r}; choose {' or '.join(GRANULARITIES)}")


def resolve_model(model: str | Path | None = None, scenario: str | None = None,
                  granularity: str | None = None) -> Path:
    """The export dir: ``model`` as given, or ``scenario``'s under the granularity's root (weight by default)."""
    check_granularity(granularity)
    if model is not None:
        return Path(model)
    if scenario is None:
        raise DataError("name an export: a model dir or a scenario")
    d = EXPORT_ROOTS[granularity or "weight"] / scenario
    if not (d / DEPLOY_FILE).is_file() and (d / INDEX_FILE).is_file():
        try:
            why = json.loads((d / INDEX_FILE).read_text())["why"]
        except (ValueError, KeyError, TypeError):
            why = f"see {d / INDEX_FILE}"
        raise CheckpointError(f"{d}: nothing exported ({why})")
    return d


def check_export(info: Mapping[str, Any], model_dir: str | Path, granularity: str | None, precision: str,
                 sparse: bool, runtime: str) -> None:
    """The export is the granularity asked for and holds the file asked for: one line naming both if not."""
    check_granularity(granularity)
    kind = granularity_of(info)
    if granularity is not None and granularity != kind:
        raise CheckpointError(f"{model_dir} holds a {kind} export (its {DEPLOY_FILE}), not the granularity "
                              f"{granularity} asked for")
    if kind != "channel":
        return
    if runtime != "onnx":
        raise DataError(f"{model_dir} is a channel export: ONNX files only, no sparse_fp32.pt for runtime {runtime}")
    if sparse or precision not in CHANNEL_PRECISIONS:
        raise DataError(f"{model_dir} is a channel export: its compact network comes as "
                        f"{' and '.join(CHANNEL_PRECISIONS)} ONNX files only, not {precision}{' sparse' if sparse else ''}")


def preprocess(paths: list[Path], info: Mapping[str, Any]) -> torch.Tensor:
    """N x 3 x S x S floats exactly as training saw them: the cache's decode, /255, (x - mean) / std."""
    from ..data.cache import decode

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


def split_images(split: str, manifest: str | Path) -> list[Path]:
    """The image files of one split of the pipeline's manifest (data/splits/manifest.csv), in its order."""
    import pandas as pd

    manifest = Path(manifest)
    if not manifest.is_file():
        raise DataError(f"manifest not found: {manifest} (run the split stage, or pass --images)")
    rows = pd.read_csv(manifest)
    if not {"path", "split"} <= set(rows.columns):
        raise DataError(f"{manifest} is not a split manifest (needs the columns path and split)")
    paths = [Path(p) for p in rows.loc[rows["split"] == split, "path"]]
    if not paths:
        raise DataError(f"{manifest} has no images in split {split!r}")
    return paths


def onnx_entry(info: Mapping[str, Any], model_dir: str | Path, precision: str, sparse: bool) -> dict[str, Any]:
    """deploy.json's entry of one ONNX file; a file that was not shipped is an error that says why."""
    key = precision + ("_sparse" if sparse else "")
    entries = info.get("onnx") or {}
    if key not in entries:
        raise CheckpointError(f"{model_dir}: no {key} ONNX file in {DEPLOY_FILE} (export.precisions: "
                              f"{', '.join(sorted(entries)) or 'none evaluated'})")
    entry = entries[key]
    if not entry.get("shipped"):
        raise CheckpointError(f"{model_dir}: {entry.get('file')} was not shipped: {entry.get('why_not')}")
    return entry


def predict(model_dir: str | Path, images: str | Path | list[Path], batch: int = 64, precision: str = "fp32",
            sparse: bool = False, runtime: str = "onnx", granularity: str | None = None) -> list[tuple[Path, float, bool]]:
    """(path, positive-class probability, decision) per image; ``granularity`` (if given) must be the export's."""
    from . import onnx_files

    info = read_deploy(model_dir)
    check_export(info, model_dir, granularity, precision, sparse, runtime)
    if runtime == "onnx":
        entry = onnx_entry(info, model_dir, precision, sparse)
        path = Path(model_dir) / entry["file"]
        threshold, sess = float(entry["threshold"]), onnx_files.session(path)
    elif runtime == "torch":
        threshold, model = info["threshold"], load_sparse(Path(model_dir) / SPARSE["fp32"][0])
    else:
        raise DataError(f"unknown runtime {runtime!r}; choose onnx or torch")
    paths = images if isinstance(images, list) else list_images(images)
    x = preprocess(paths, info)  # every image decoded first: a corrupt one stops before any output
    chunks = [x[start:start + batch] for start in range(0, len(paths), batch)]
    if runtime == "onnx":
        s = onnx_files.run(sess, (c.numpy() for c in chunks), path)[1].tolist()
    else:
        with torch.no_grad():
            s = torch.cat([torch.softmax(model(c), dim=1)[:, 1] for c in chunks]).tolist()
    return [(p, v, v >= threshold) for p, v in zip(paths, s)]
