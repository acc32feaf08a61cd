"""The deployable model: a pruned round exported for an edge device, with its size measured.

``models/export/<scenario>/`` holds

* ``sparse_fp32.pt`` / ``sparse_fp16.pt``: only the surviving weights. Per tensor: ``values`` (the
  surviving entries in C order, fp32 or fp16) and their positions, either a packed bitmask
  (``numpy.packbits`` of the flattened mask, 1 bit per weight) or ``indices`` (int32 flat positions,
  32 bits per survivor), whichever is smaller for that tensor: the bitmask above 1/32 = 3.125 % remaining,
  the indices below. Plus the shape. Loadable with ``torch.load(..., weights_only=True)``; see
  :func:`load_sparse`.
* ``model.onnx``: the network in eval mode for standard runtimes, fixed input ``image`` N x 3 x S x S
  (normalised, RGB), two outputs: ``logits`` (N x 2) and ``score`` = softmax(logits)[:, 1] (N), the
  positive-class probability the threshold applies to. ONNX stores dense tensors, zeros included.
* ``deploy.json``: preprocessing, threshold and provenance (also in the ONNX ``metadata_props``).

Every scenario's dir and the whole ``models/export`` are written atomically.
"""
from __future__ import annotations

import csv
import gzip
import io as _io
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from . import io
from .errors import CheckpointError, ConfigError, DataError
from .sparse import load_sparse, to_sparse

SELECTION = Path("reports/selection.json")
EXPORT_DIR = Path("models/export")
SIZES_CSV = Path("reports/export_sizes.csv")
CACHE_META = Path("data/cache/meta.json")
SPARSE = {"fp32": ("sparse_fp32.pt", torch.float32), "fp16": ("sparse_fp16.pt", torch.float16)}
ONNX_FILE = "model.onnx"
DEPLOY_FILE = "deploy.json"
SIZE_COLUMNS = ("scenario", "seed", "round", "remaining", "nonzero", "dense_bytes", "dense_gz_bytes",
                "sparse_fp32_bytes", "sparse_fp32_gz_bytes", "sparse_fp16_bytes", "sparse_fp16_gz_bytes",
                "onnx_bytes", "onnx_gz_bytes", "fp16_over_dense")


# --- export ---------------------------------------------------------------------------------------------

class _Scored(torch.nn.Module):
    """The network plus the positive-class probability, so a runtime needs no post-processing."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(image)
        return logits, torch.softmax(logits, dim=1)[:, 1]


def export_onnx(model: torch.nn.Module, image_size: int, path: str | Path, metadata: Mapping[str, Any]) -> None:
    """torch.onnx (dynamo) export with a dynamic batch; ``metadata`` goes into metadata_props as strings."""
    import warnings

    wrapped = _Scored(model).eval()
    example = torch.zeros(1, 3, image_size, image_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(wrapped, (example,), None, input_names=["image"],
                                    output_names=["logits", "score"], dynamo=True, verbose=False,
                                    dynamic_shapes={"image": {0: torch.export.Dim("batch")}})
    for node in program.model.graph.all_nodes():  # exporter debug info: stack traces with this machine's paths
        node.metadata_props.clear()                  # would make the file differ between checkouts
    program.model.metadata_props.update(
        {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})
    program.save(str(path))


def _positive_class(params) -> str:
    return "malignant" if params.data.source == "isic" else params.data.positive_class


def deploy_info(meta: Mapping[str, Any], threshold: float, positive_class: str, *, scenario: str, seed: int,
                k: int, weights: str, mask_path: str, remaining: float, nonzero: int) -> dict[str, Any]:
    """What a runtime needs beside the weights: preprocessing, decision rule, and where the model came from."""
    return {
        "scenario": scenario, "seed": int(seed), "round": int(k),
        "image_size": int(meta["image_size"]), "mean": list(meta["mean"]), "std": list(meta["std"]),
        "channel_order": "RGB", "layout": "NCHW",
        "preprocessing": "decode to RGB, resize to image_size x image_size (bilinear), pixel / 255, "
                         "(x - mean) / std per channel",
        "threshold": float(threshold), "score": "softmax(logits)[:, 1] (ONNX output 'score')",
        "decision": "positive if score >= threshold",
        "positive_class": positive_class, "source_checkpoint": weights, "source_mask": mask_path,
        "remaining": float(remaining), "nonzero": int(nonzero),
        "files": {"sparse_fp32": SPARSE["fp32"][0], "sparse_fp16": SPARSE["fp16"][0], "onnx": ONNX_FILE},
    }


def _write_export(out: Path, weights: str | Path, mask_path: str | Path, meta: Mapping[str, Any],
                  threshold: float, positive_class: str, *, scenario: str, seed: int, k: int) -> dict[str, Any]:
    from .masks import load_mask

    threshold = float(threshold)
    if not 0.0 <= threshold <= 1.0 or math.isnan(threshold):
        raise ConfigError(f"{scenario}: threshold {threshold} is not a probability in [0, 1] "
                          "(it applies to softmax(logits)[:, 1])")
    state, mask = io.load_torch(weights), load_mask(mask_path)
    if not isinstance(state, dict) or not set(mask) <= set(state):
        raise CheckpointError(f"{weights} does not hold the tensors named in {mask_path}")
    out.mkdir(parents=True, exist_ok=True)
    for key, (fname, dtype) in SPARSE.items():
        torch.save(to_sparse(state, mask, dtype), out / fname)
    model = load_sparse(out / SPARSE["fp32"][0])
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    total = sum(int(m.numel()) for m in mask.values())
    remaining = sum(int(m.sum()) for m in mask.values()) / total
    info = deploy_info(meta, threshold, positive_class, scenario=scenario, seed=seed, k=k, weights=str(weights),
                       mask_path=str(mask_path), remaining=remaining, nonzero=nonzero)
    export_onnx(model, info["image_size"], out / ONNX_FILE, info)
    (out / DEPLOY_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return info


def export_model(out_dir: str | Path, weights: str | Path, mask_path: str | Path, meta: Mapping[str, Any],
                 threshold: float, positive_class: str = "Positive", *, scenario: str = "model", seed: int = 0,
                 k: int = 0) -> dict[str, Any]:
    """Export one checkpoint + mask into ``out_dir`` (atomically); return its deploy info."""
    with io.atomic_path(out_dir, is_dir=True) as tmp:
        return _write_export(tmp, weights, mask_path, meta, threshold, positive_class, scenario=scenario,
                             seed=seed, k=k)


def read_selection(path: str | Path = SELECTION) -> dict[str, dict | None]:
    """The report stage's choice per scenario (reports/selection.json); null: no level qualified."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found; run the report stage first (dvc repro report)")
    try:
        sel = io.read_json(path)
    except ValueError as exc:
        raise DataError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(sel, dict):
        raise DataError(f"{path} must map scenario -> selection or null")
    for name, entry in sel.items():
        if not re.fullmatch(r"[a-z][a-z0-9_]*", str(name)):
            raise DataError(f"{path}: scenario name {name!r} is not a lower-case identifier")
        if entry is None:
            continue
        missing = [k for k in ("seed", "round", "weights", "mask", "threshold") if not isinstance(entry, dict) or k not in entry]
        if missing:
            raise DataError(f"{path}: {name} lacks {', '.join(missing)}")
    return sel


def _gz_size(path: Path) -> int:
    return len(gzip.compress(path.read_bytes(), compresslevel=6, mtime=0))


def measure_sizes(dense: Path, export_dir: Path) -> dict[str, int]:
    """Bytes on disk of the dense checkpoint and the exported files, raw and gzip-compressed."""
    files = {"dense": dense, "sparse_fp32": export_dir / SPARSE["fp32"][0],
             "sparse_fp16": export_dir / SPARSE["fp16"][0], "onnx": export_dir / ONNX_FILE}
    out = {}
    for key, p in files.items():
        out[f"{key}_bytes"] = p.stat().st_size
        out[f"{key}_gz_bytes"] = _gz_size(p)
    return out


def export_selection(params, selection: str | Path = SELECTION, cache_meta: str | Path = CACHE_META,
                     out_dir: str | Path = EXPORT_DIR, sizes_csv: str | Path = SIZES_CSV) -> dict[str, Any]:
    """The export stage: every selected model into ``out_dir`` (atomically, all or nothing), then the size table."""
    sel = read_selection(selection)
    cache_meta = Path(cache_meta)
    if not cache_meta.is_file():
        raise DataError(f"{cache_meta} not found; run the cache stage first (dvc repro cache)")
    meta = io.read_json(cache_meta)
    out_dir = Path(out_dir)
    rows, skipped, exported = [], [], {}
    with io.atomic_path(out_dir, is_dir=True) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        for name, entry in sel.items():
            if entry is None:
                skipped.append(name)
                print(f"export: {name}: no level met the FN budget, nothing exported")
                continue
            info = _write_export(tmp / name, entry["weights"], entry["mask"], meta, entry["threshold"],
                                 _positive_class(params), scenario=name, seed=entry["seed"], k=entry["round"])
            sizes = measure_sizes(Path(entry["weights"]), tmp / name)
            rows.append({"scenario": name, "seed": info["seed"], "round": info["round"],
                         "remaining": info["remaining"], "nonzero": info["nonzero"], **sizes,
                         "fp16_over_dense": sizes["sparse_fp16_bytes"] / sizes["dense_bytes"]})
            exported[name] = str(out_dir / name)
        (tmp / "index.json").write_text(json.dumps({"exported": exported, "not_exported": skipped},
                                                   indent=2, sort_keys=True) + "\n")
    write_sizes_csv(rows, sizes_csv)
    return {"exported": exported, "not_exported": skipped}


def write_sizes_csv(rows: list[dict[str, Any]], path: str | Path = SIZES_CSV) -> None:
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SIZE_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in SIZE_COLUMNS})
    io.write_text(path, buf.getvalue())


def export_sizes_markdown(path: str | Path = SIZES_CSV) -> str:
    """The size table for reports/summary.md (KiB on disk, raw / gzip)."""
    path = Path(path)
    if not path.is_file():
        return "_No export size table: run the export stage._\n"
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    lines = ["## Exported models: bytes on disk", "",
             "KiB raw / gzip. Sparse files hold only the surviving weights (values + positions); ONNX is dense.", "",
             "| scenario | round | remaining | nonzero | dense weights.pt | sparse fp32 | sparse fp16 | ONNX "
             "| fp16 / dense |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def kib(r, key):
        return f"{int(r[key + '_bytes']) / 1024:,.0f} / {int(r[key + '_gz_bytes']) / 1024:,.0f}"

    for r in rows:
        lines.append(f"| {r['scenario']} | {r['round']} | {100 * float(r['remaining']):.3g} % | {int(r['nonzero']):,} "
                     f"| {kib(r, 'dense')} | {kib(r, 'sparse_fp32')} | {kib(r, 'sparse_fp16')} | {kib(r, 'onnx')} "
                     f"| {100 * float(r['fp16_over_dense']):.2f} % |")
    if not rows:
        lines.append("| (no scenario met its FN budget) | | | | | | | | |")
    return "\n".join(lines) + "\n"


