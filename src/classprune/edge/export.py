"""The deployable model: a pruned round exported for an edge device, with its size measured.

``models/export/<scenario>/``: ``sparse_fp32.pt`` / ``sparse_fp16.pt`` (only the surviving weights: values,
shape, positions as a packed bitmask or int32 indices, whichever is smaller; :func:`load_sparse`);
``model.onnx`` (eval mode, input ``image`` N x 3 x S x S normalised RGB, outputs ``logits`` and ``score`` =
softmax(logits)[:, 1], dense fp32) and the stage's fp16/int8/sparse-stored ONNX files
(:mod:`classprune.edge.onnx_files`), each evaluated as shipped (:mod:`classprune.edge.shipped`); ``deploy.json``:
preprocessing, thresholds, provenance, val/test metrics, the test FNR bound. Written atomically.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import io
from ..paths import CACHE
from ..errors import CheckpointError, ConfigError, DataError
from .onnx_files import FILES, cpu_features, cpu_text, export_onnx, quantize_int8
from .sizes import SIZES_CSV, gz_size, write_sizes_csv
from .sparse import load_sparse, to_sparse

SELECTION = Path("reports/selection.json")
EXPORT_DIR = Path("models/export")
EXPORT_CSV = Path("reports/export.csv")
EXPORT_MD = Path("reports/export.md")
EXPORT_JSON = Path("reports/export.json")
SPARSE = {"fp32": ("sparse_fp32.pt", torch.float32), "fp16": ("sparse_fp16.pt", torch.float16)}
ONNX_FILE = FILES["fp32"]
DEPLOY_FILE = "deploy.json"


def positive_class_of(params) -> str:
    """The positive class's name as deploy.json states it."""
    return "malignant" if params.data.source == "isic" else params.data.positive_class


def network_of(params) -> dict[str, Any]:
    """The network an export file holds (the sparse file names it)."""
    return {"arch": params.model.arch, "head": list(params.model.head)}


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


def check_threshold(scenario: str, threshold: float) -> float:
    """The selection's threshold as a probability: it applies to softmax(logits)[:, 1]."""
    if not 0.0 <= (threshold := float(threshold)) <= 1.0 or math.isnan(threshold):
        raise ConfigError(f"{scenario}: threshold {threshold} is not a probability in [0, 1] "
                          "(it applies to softmax(logits)[:, 1])")
    return threshold


def _write_export(out: Path, weights: str | Path, mask_path: str | Path, meta: Mapping[str, Any],
                  threshold: float, positive_class: str, *, scenario: str, seed: int, k: int,
                  network: Mapping[str, Any] | None = None) -> dict[str, Any]:
    from ..lottery.masks import load_mask

    threshold = check_threshold(scenario, threshold)
    state, mask = io.load_torch(weights), load_mask(mask_path)
    if not isinstance(state, dict) or not set(mask) <= set(state):
        raise CheckpointError(f"{weights} does not hold the tensors named in {mask_path}")
    out.mkdir(parents=True, exist_ok=True)
    for key, (fname, dtype) in SPARSE.items():
        torch.save(to_sparse(state, mask, dtype, **(network or {})), out / fname)
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
                 k: int = 0, network: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Export one checkpoint + mask into ``out_dir`` (atomically); return its deploy info. ``network``:
    {"arch", "head"} of params.model (default AlexNet-256-8-8-2)."""
    with io.atomic_path(out_dir, is_dir=True) as tmp:
        return _write_export(tmp, weights, mask_path, meta, threshold, positive_class, scenario=scenario,
                             seed=seed, k=k, network=network)


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


def cache_meta(cache_dir: Path) -> dict[str, Any]:
    """The decoded cache's image size, mean and std: the preprocessing a device must repeat."""
    if not (cache_dir / "meta.json").is_file():
        raise DataError(f"{cache_dir / 'meta.json'} not found; run the cache stage first (dvc repro cache)")
    return io.read_json(cache_dir / "meta.json")


def measure_sizes(dense: Path, export_dir: Path) -> dict[str, int]:
    """Bytes on disk of the dense checkpoint and the exported files, raw and gzip-compressed."""
    files = {"dense": dense, "sparse_fp32": export_dir / SPARSE["fp32"][0],
             "sparse_fp16": export_dir / SPARSE["fp16"][0], "onnx": export_dir / ONNX_FILE}
    out = {}
    for key, p in files.items():  # an ONNX file that was not shipped has no size
        out[f"{key}_bytes"] = p.stat().st_size if p.is_file() else None
        out[f"{key}_gz_bytes"] = gz_size(p) if p.is_file() else None
    return out


def calibration(params, cache_dir: Path) -> list:
    """Train images of both classes, ``export.calibration_per_class`` each (seeded), in batches of 32."""
    from ..data.cache import CachedDataset, load_split

    train = load_split(cache_dir, "train")
    rng = np.random.default_rng(params.export.seed)
    picks = []
    for c in (0, 1):
        idx = np.flatnonzero(train.labels == c)
        if idx.size == 0:
            raise DataError(f"{cache_dir}: the train split has no images of class {c} to calibrate int8 with")
        picks.append(rng.choice(idx, min(params.export.calibration_per_class, idx.size), replace=False))
    ds = CachedDataset(train)
    x = np.stack([ds[int(i)][0].numpy() for i in np.sort(np.concatenate(picks))])
    return [x[i:i + 32] for i in range(0, len(x), 32)]


def set_metadata(path: Path, updates: Mapping[str, Any]) -> None:
    """Add or replace entries of an ONNX file's metadata_props (values as JSON)."""
    import onnx

    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props} | {k: json.dumps(v) for k, v in updates.items()}
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(path))


def ship_onnx(out: Path, info: dict[str, Any], params, cache_dir: Path, row: Mapping[str, Any]) -> list[dict]:
    """Write the other ONNX files, then :func:`ship_files`."""
    from . import onnx_files

    src = out / ONNX_FILE
    fp32_nodes: dict[str, list[str]] = {"fp32": []}
    if "fp16" in params.export.precisions:
        onnx_files.to_fp16(src, out / FILES["fp16"])
        fp32_nodes["fp16"] = []
    fp32_nodes.update(int8_nodes(out, params, calibration(params, cache_dir)))
    for p in list(fp32_nodes):
        onnx_files.to_sparse_initializers(out / FILES[p], out / FILES[f"{p}_sparse"])
        fp32_nodes[f"{p}_sparse"] = fp32_nodes[p]
    return ship_files(out, info, params, cache_dir, row, fp32_nodes)


def int8_nodes(out: Path, params, calib: list) -> dict[str, list[str]]:
    """``{"int8": nodes kept fp32}`` when int8 is exported: static QDQ from ``out``'s fp32 file, 7-bit weights
    where ``export.int8_reduce_range`` asks (the same decisions on CPUs with and without VNNI)."""
    if "int8" not in params.export.precisions:
        return {}
    return {"int8": quantize_int8(out / FILES["fp32"], out / FILES["int8"], calib,
                                  reduce_range=params.export.int8_reduce_range)}


def ship_files(out: Path, info: dict[str, Any], params, cache_dir: Path, row: Mapping[str, Any],
               fp32_nodes: dict[str, list[str]]) -> list[dict]:
    """Evaluate each ONNX file of ``fp32_nodes`` as shipped, keep those that pass, write deploy.json; rows."""
    from . import shipped

    ev, cpu = params.evaluate, cpu_features()  # int8 kernels differ with VNNI: say which CPU scored the files
    info.update(evaluated_on=cpu, int8_reduce_range=params.export.int8_reduce_range)
    row = {**row, "evaluated_on": cpu_text(cpu), "int8_reduce_range": params.export.int8_reduce_range}
    results = {p: shipped.assess(out / FILES[p], cache_dir, ev) for p in fp32_nodes}
    entries, rows = {}, []
    for p, res in results.items():
        why = shipped.why_not(res, None if p == "fp32" else results["fp32"], ev, params.report.fn_margin)
        path = out / FILES[p]
        if not why:
            set_metadata(path, {"threshold": res["threshold"], "precision": p})
        rows.append({**row, "precision": p, "file": FILES[p], "shipped": not why, "why": why,
                     "fp32_nodes": " ".join(fp32_nodes[p]), "bytes": path.stat().st_size, "gz_bytes": gz_size(path),
                     "threshold": res["threshold"],
                     **{f"{s}_{k}": res[s][k] for s in shipped.SPLITS for k in
                        ("auc", "fnr", "fpr", "fn", "n_positive", "fp", "n", "fnr_upper")},
                     "bound_threshold": res["bound"]["threshold"],
                     **{f"bound_{s}_{k}": res["bound"][s][k] for s in shipped.SPLITS for k in ("fnr", "fpr", "fn", "fnr_upper")}})
        entries[p] = shipped.deploy_entry(FILES[p], res, why, fp32_nodes[p])
        if why:
            path.unlink()
            print(f"export: {info['scenario']}: {FILES[p]} not shipped: {why}")
    main = next((p for p in FILES if p in entries and entries[p]["shipped"]), None)
    info.update({"onnx": entries, "threshold_rule": shipped.rule_text(ev),
                 "fnr_bound": shipped.fnr_bound(entries[main], ev) if main else None})
    if main:
        info["threshold"] = entries[main]["threshold"]
    info["files"] = {k: v for k, v in info["files"].items() if k != "onnx" or entries["fp32"]["shipped"]}
    (out / DEPLOY_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return rows


def export_selection(params, selection: str | Path = SELECTION, cache_dir: str | Path = CACHE,
                     out_dir: str | Path = EXPORT_DIR, sizes_csv: str | Path = SIZES_CSV,
                     export_csv: str | Path = EXPORT_CSV, export_md: str | Path = EXPORT_MD,
                     export_json: str | Path = EXPORT_JSON) -> dict[str, Any]:
    """The export stage: every selected model into ``out_dir`` (atomically, all or nothing), each ONNX file
    evaluated as shipped, then the size table and the export table."""
    from . import shipped

    sel, cache_dir, out_dir = read_selection(selection), Path(cache_dir), Path(out_dir)
    meta = cache_meta(cache_dir)
    rows, onnx_rows, skipped, exported = [], [], [], {}
    with io.atomic_path(out_dir, is_dir=True) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        for name, entry in sel.items():
            if entry is None:
                skipped.append(name)
                print(f"export: {name}: no level met the FN budget, nothing exported")
                continue
            info = _write_export(tmp / name, entry["weights"], entry["mask"], meta, entry["threshold"],
                                 positive_class_of(params), scenario=name, seed=entry["seed"], k=entry["round"],
                                 network=network_of(params))
            row = {"scenario": name, "seed": info["seed"], "round": info["round"],
                   "remaining": info["remaining"], "nonzero": info["nonzero"]}
            onnx_rows += ship_onnx(tmp / name, info, params, cache_dir, row)
            sizes = measure_sizes(Path(entry["weights"]), tmp / name)  # the files as shipped (metadata included)
            rows.append({**row, **sizes, "fp16_over_dense": sizes["sparse_fp16_bytes"] / sizes["dense_bytes"]})
            exported[name] = str(out_dir / name)
        (tmp / "index.json").write_text(json.dumps({"exported": exported, "not_exported": skipped},
                                                   indent=2, sort_keys=True) + "\n")
        write_sizes_csv(rows, sizes_csv)
        shipped.write_csv(onnx_rows, export_csv)
        io.write_json(export_json, shipped.metrics_tree(onnx_rows))
        io.write_text(export_md, shipped.markdown(onnx_rows, params.evaluate, skipped))
    return {"exported": exported, "not_exported": skipped}
