"""Every ONNX file of an export evaluated as shipped: onnxruntime's scores, the report's metric code.

Per file, the threshold is chosen again on val from the file's own ``score`` output (the value a device
compares), so a precision that shifts scores gets its own; test only reports. A file ships when on val it
meets the FNR rule at that threshold, is not a constant predictor there, and (every file but the fp32
reference) does not pay for its FNR with more than ``report.fn_margin`` extra FPR over the fp32 file. Its FNR
on test, a split that chose neither the level nor the threshold, carries a one-sided exact binomial upper
bound at ``evaluate.fnr_confidence``.
"""
from __future__ import annotations

import csv
import io as _io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .. import io
from ..evaluation.metrics import binary_metrics, fnr_upper_bound, operating_threshold
from .onnx_files import run, session

SPLITS = ("val", "test")
COLUMNS = ("scenario", "seed", "round", "remaining", "nonzero", "precision", "file", "shipped", "why",
           "fp32_nodes", "bytes", "gz_bytes", "threshold",
           *(f"{s}_{k}" for s in SPLITS for k in ("auc", "fnr", "fpr", "fn", "n_positive", "fp", "n", "fnr_upper")),
           "bound_threshold", *(f"bound_{s}_{k}" for s in SPLITS for k in ("fnr", "fpr", "fn", "fnr_upper")),
           "evaluated_on", "int8_reduce_range")


def rule_text(ev) -> str:
    if ev.threshold_rule == "bound":
        return f"val FNR {100 * ev.fnr_confidence:g} % upper bound <= {ev.target_fnr}"
    return f"val FNR <= {ev.target_fnr}"


def batches(cache_dir: str | Path, split: str, batch_size: int):
    """(labels, float32 N x 3 x S x S batches) of a cached split, normalised exactly as evaluation does."""
    from ..data.loader import make_loader

    loader = make_loader(cache_dir, split, batch_size, train=False)
    labels = np.asarray(loader.dataset.split.labels)
    return labels, (x.numpy() for x, _ in loader)


def assess(path: Path, cache_dir: str | Path, ev) -> dict[str, Any]:
    """Scores of one file on val and test; the val-chosen threshold; metrics and FNR bounds at it."""
    sess = session(path)
    scored = {}
    for split in SPLITS:
        labels, xs = batches(cache_dir, split, ev.batch_size)
        scored[split] = (labels, *run(sess, xs, path))
    labels, _, score = scored["val"]
    threshold = operating_threshold(labels, score, ev.target_fnr,
                                    ev.fnr_confidence if ev.threshold_rule == "bound" else None)
    out: dict[str, Any] = {"threshold": threshold, **_at(scored, threshold, ev)}
    # what a promise the val data backs would cost: the threshold whose val FNR upper bound meets the target
    bound = operating_threshold(labels, score, ev.target_fnr, ev.fnr_confidence)
    out["bound"] = {"threshold": bound, **_at(scored, bound, ev)}
    return out


def _at(scored: Mapping[str, tuple], threshold: float | None, ev) -> dict[str, dict[str, Any]]:
    out = {}
    for split, (labels, logodds, score) in scored.items():
        decision = (score >= threshold).astype(int) if threshold is not None else np.zeros_like(labels)
        m = binary_metrics(labels, logodds, decision)  # AUC ranks by the log-odds, as the report's does
        m["fnr_upper"] = fnr_upper_bound(m["fn"], m["n_positive"], ev.fnr_confidence)
        out[split] = m
    return out


def why_not(result: Mapping[str, Any], reference: Mapping[str, Any] | None, ev, fpr_margin: float) -> str:
    """Empty when the file ships; else the reason, decided on val only."""
    val = result["val"]
    if result["threshold"] is None:
        return "no positives in val: no threshold can be chosen"
    if val["constant"]:
        return "one class for every val image at its threshold"
    if ev.threshold_rule == "bound" and (val["fnr_upper"] is None or val["fnr_upper"] > ev.target_fnr):
        return (f"val FNR upper bound {val['fnr_upper']:.3f} > {ev.target_fnr} even at 0 misses "
                f"({val['n_positive']} val positives)")
    if val["fnr"] > ev.target_fnr:
        return f"val FNR {val['fnr']:.3f} > {ev.target_fnr} at every threshold (tied scores)"
    if reference is not None and val["fpr"] > reference["val"]["fpr"] + fpr_margin:
        return (f"val FPR {val['fpr']:.3f} at the FNR target, more than {fpr_margin} above fp32's "
                f"{reference['val']['fpr']:.3f}")
    return ""


def deploy_entry(file: str, result: Mapping[str, Any], why: str, fp32_nodes: list[str]) -> dict[str, Any]:
    keep = ("auc", "fnr", "fpr", "fn", "n_positive", "fp", "n", "fnr_upper")
    return {"file": file, "shipped": not why, "why_not": why or None, "threshold": result["threshold"],
            "fp32_nodes": fp32_nodes, **{s: {k: result[s][k] for k in keep} for s in SPLITS}}


def fnr_bound(entry: Mapping[str, Any], ev) -> dict[str, Any]:
    """deploy.json's promise: the test FNR at the shipped threshold and what the split can support."""
    test = entry["test"]
    return {"split": "test", "confidence": ev.fnr_confidence, "misses": test["fn"], "positives": test["n_positive"],
            "fnr": test["fnr"], "upper_bound": test["fnr_upper"],
            "smallest_supported": fnr_upper_bound(0, test["n_positive"], ev.fnr_confidence),
            "target_fnr": ev.target_fnr, "meets_target": test["fnr_upper"] is not None
            and test["fnr_upper"] <= ev.target_fnr}


def metrics_tree(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """reports/export.json, for `dvc metrics diff`: per scenario and ONNX file, test metrics as shipped."""
    keys = ("test_auc", "test_fnr", "test_fnr_upper", "test_fpr", "threshold", "bytes", "gz_bytes")
    tree: dict[str, Any] = {}
    for r in rows:
        tree.setdefault(r["scenario"], {})[r["precision"]] = {"shipped": bool(r["shipped"]),
                                                             **{k: r[k] for k in keys}}
    return tree


def write_csv(rows: list[dict[str, Any]], path: str | Path) -> None:
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{r[k]:.6g}" if isinstance(r.get(k), float) else r.get(k, "")) for k in COLUMNS})
    io.write_text(path, buf.getvalue())


def _pct(v: Any, scale: float = 100, digits: int = 1) -> str:
    return "n/a" if v is None or v in ("", "None") else f"{scale * float(v):.{digits}f}"


def _scored_on(rows: list[dict[str, Any]]) -> list[str]:
    """Which CPU scored the files (int8 decisions can differ without VNNI) and how int8 was quantized."""
    cpus = sorted({str(r["evaluated_on"]) for r in rows if r.get("evaluated_on")})
    bits = {str(r.get("int8_reduce_range")) in ("True", "true") for r in rows if r["precision"].startswith("int8")}
    if not cpus:
        return []
    int8 = "" if not bits else "; int8 weights " + (" and ".join(sorted(
        "7-bit (reduce_range)" if b else "8-bit" for b in bits)))
    return ["", f"Files scored on {', '.join(cpus)}{int8}."]


def markdown(rows: list[dict[str, Any]], ev, not_exported: list[str]) -> str:
    """reports/export.md: the table per scenario and file, and what the test split can promise."""
    conf = f"{100 * ev.fnr_confidence:g} %"
    lines = ["# Exported models, evaluated as shipped (onnxruntime)", "",
             f"Threshold per file chosen on val ({rule_text(ev)}), from the file's own `score` output; test only "
             f"reports. FNR bound: one-sided exact binomial (Clopper-Pearson) upper bound at {conf} on test, "
             "which chose neither the level nor the threshold. Bytes raw / gzip (KiB).", *_scored_on(rows), "",
             f"| scenario | file | shipped | test AUC | test FNR (misses / positives) | FNR <= ({conf}) | test FPR "
             "| val FNR | val FPR | KiB | why not / fp32 nodes |",
             "|---|---|---|---:|---|---:|---:|---:|---:|---:|---|"]
    smallest = {}
    for r in rows:
        smallest[r["scenario"]] = fnr_upper_bound(0, int(r["test_n_positive"]), ev.fnr_confidence)
        note = r["why"] or (f"fp32: {r['fp32_nodes']}" if r["fp32_nodes"] else "")
        lines.append(f"| {r['scenario']} | {r['file']} | {'yes' if not r['why'] else 'no'} | {_pct(r['test_auc'], 1, 4)} "
                     f"| {_pct(r['test_fnr'])} % ({r['test_fn']} / {r['test_n_positive']}) | {_pct(r['test_fnr_upper'])} % "
                     f"| {_pct(r['test_fpr'])} % | {_pct(r['val_fnr'])} % | {_pct(r['val_fpr'])} % "
                     f"| {int(r['bytes']) / 1024:,.0f} / {int(r['gz_bytes']) / 1024:,.0f} | {note} |")
    if not rows:
        lines.append("| (nothing exported) | | | | | | | | | | |")
    lines += ["", f"What a promise backed by val costs: the threshold whose val FNR {conf} upper bound meets "
              f"{ev.target_fnr} (`evaluate.threshold_rule: bound`), same files (sparse-stored ones score the same):", "",
              f"| scenario | precision | test FNR (misses / positives) | FNR <= ({conf}) | test FPR | val FPR |",
              "|---|---|---|---:|---:|---:|"]
    for r in rows:
        if not r["precision"].endswith("_sparse"):
            lines.append(f"| {r['scenario']} | {r['precision']} | {_pct(r['bound_test_fnr'])} % ({r['bound_test_fn']} / "
                         f"{r['test_n_positive']}) | {_pct(r['bound_test_fnr_upper'])} % | {_pct(r['bound_test_fpr'])} % "
                         f"| {_pct(r['bound_val_fpr'])} % |")
    lines.append("")
    for name, s in smallest.items():
        lines.append(f"- {name}: the smallest FNR the test split can support at {conf} is {100 * s:.1f} % "
                     f"(0 misses among its positives); target {100 * ev.target_fnr:g} %.")
    for name in not_exported:
        lines.append(f"- {name}: no level met the FN budget, nothing exported.")
    return "\n".join(lines) + "\n"
