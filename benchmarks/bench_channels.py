"""Channel tickets on the edge runtime: is the physically smaller network faster, and by how much per level?

Unstructured zeros run at dense speed (bench_onnx.py); a channel ticket removes whole conv channels, so its
compact ONNX file does fewer multiply-accumulates. Measured here, onnxruntime CPU, batch 1 and 32, at 1
intra-op thread and at all cores, every case of one thread setting interleaved (ABBA) with the dense fp32
file, medians and ratios to it:

* every channel level of params.yaml's rule (prune.channel, prune.rounds) as a stand-in: params.yaml's network
  (model.arch) compacted by the same code (classprune.lottery.channels) to the channel counts that level has. With the layerwise
  scope those counts are the same for every seed and trained weights (each layer keeps its share of its live
  channels), and latency depends on the shapes, not on the values; with scope global they depend on the
  trained weights, so only the exports below say what a trained ticket runs at;
* every channel export (models/export_channel/<scenario>/, `dvc repro`), against the same scenario's dense
  fp32 model.onnx when the weight export exists, else against the dense stand-in.

Writes reports/channel_latency.csv and, with channel results in reports/curves/test/, the latency frontier
reports/frontier_latency.png: test AUC and FNR (means, 95 % CI over seeds) against batch-1 latency at 1
thread, fp32 and int8, one line per method and granularity (weight tickets sit at the dense file's latency).

    python benchmarks/bench_channels.py [--reps 40]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from _common import ROOT, interleaved, median, print_result, row, write_table  # noqa: E402

OUT = ROOT / "reports" / "channel_latency.csv"
FRONTIER = ROOT / "reports" / "frontier_latency.png"
COLUMNS = ("source", "round", "precision", "threads", "macs", "params", "channels", "batch1_ms", "batch32_ms",
           "batch1_vs_dense", "batch32_vs_dense", "reps")
TARGETS = {"fp32": 3.0, "int8": 8.0}  # issue 29's bar for the shipped channel file, against dense fp32


def _calibration(size: int) -> list[np.ndarray]:
    return [np.random.default_rng(i).standard_normal((32, 3, size, size)).astype(np.float32) for i in range(2)]


def _write(model, size: int, d: Path) -> dict[str, Path]:
    """fp32 and int8 ONNX files of ``model`` in ``d``, by the export's own code."""
    from classprune.edge import onnx_files

    d.mkdir(parents=True)
    fp32, int8 = d / onnx_files.FILES["fp32"], d / onnx_files.FILES["int8"]
    onnx_files.export_onnx(model.eval(), size, fp32, {})
    onnx_files.quantize_int8(fp32, int8, _calibration(size))
    return {"fp32": fp32, "int8": int8}


def level_stand_ins(params, tmp: Path) -> list[dict]:
    """The dense network (round 0 here: the reference) and each round's compact network, as ONNX files."""
    import torch

    from classprune.lottery.channel_criteria import prune_channels
    from classprune.lottery.channels import alive, compact, full_channel_mask, macs_and_params, units
    from classprune.lottery.masks import apply_mask
    from classprune.models.network import build_model

    size, c = params.data.image_size, params.prune.channel
    torch.manual_seed(0)
    model = build_model(seed=0, dropout=params.model.dropout, arch=params.model.arch, head=params.model.head).eval()
    unit_list = units(model, c.layers, size)
    mask = full_channel_mask(model, unit_list)
    macs, n = macs_and_params(model, size)
    out = [{"source": "dense", "round": 0, "macs": macs, "params": n, "channels": "all",
            "files": _write(model, size, tmp / "dense"), "key": ("level", 0), "ref": (("level", 0), "fp32")}]
    for r in params.prune.rounds:
        if r.k > 1:
            apply_mask(model, mask)
            mask = prune_channels(model, mask, unit_list, params.channel_rate(), c.scope, c.criterion, size)
        small = compact(model, mask, unit_list, size)
        macs, n = macs_and_params(small, size)
        kept = " ".join(str(int(a.sum())) for a in alive(mask, unit_list).values())
        out.append({"source": f"level stand-in ({c.criterion}, {c.scope})", "round": r.k, "macs": macs,
                    "params": n, "channels": kept, "files": _write(small, size, tmp / f"round_{r.k}"),
                    "key": ("level", r.k), "ref": (("level", 0), "fp32")})
    return out


def channel_exports(export: Path) -> list[dict]:
    """Each channel export's files, with its reference: the same scenario's dense fp32 file (timed as
    ``files["dense"]``), else the dense stand-in's."""
    out = []
    if not export.is_dir():
        return out
    for d in sorted(p for p in export.iterdir() if (p / "deploy.json").is_file()):
        info = json.loads((d / "deploy.json").read_text())
        files = {p: d / f for p, f in (("fp32", "model.onnx"), ("int8", "model_int8.onnx")) if (d / f).is_file()}
        dense, key = ROOT / "models" / "export" / d.name / "model.onnx", ("export", d.name)
        layers = info.get("channels") or {}  # {layer: [kept, dense]}; deploy.json sorts keys as text
        kept = " ".join(str(layers[n][0]) for n in sorted(layers, key=lambda n: [int(t) if t.isdigit() else t
                                                                              for t in n.split(".")]))
        out.append({"source": f"export {d.name}", "round": info.get("round"), "macs": info.get("macs"),
                    "params": info.get("params"), "channels": kept, "files": files, "key": key,
                    "ref": (key, "dense") if dense.is_file() else (("level", 0), "fp32"),
                    "extra": {"dense": dense} if dense.is_file() else {}})
    return out


def time_files(files: dict[str, Path], size: int, reps: int, threads: int) -> dict[str, dict[str, float]]:
    """Median seconds per run of every file at batch 1 and 32, all files interleaved."""
    from classprune.edge import onnx_files

    sessions = {k: onnx_files.session(p, threads=threads) for k, p in files.items()}
    out: dict[str, dict[str, float]] = {k: {} for k in files}
    for batch, n in ((1, reps), (32, max(4, reps // 2))):
        x = np.random.default_rng(batch).standard_normal((batch, 3, size, size)).astype(np.float32)
        cases = {k: (lambda s=s: s.run(["score"], {"image": x})) for k, s in sessions.items()}
        for k, v in interleaved(cases, n, warmup=2).items():
            out[k][f"batch{batch}"] = median(v)
    return out


def measure(params, reps: int, export: Path, tmp: Path) -> list[dict]:
    size = params.data.image_size
    entries = [*level_stand_ins(params, tmp), *channel_exports(export)]
    files = {(e["key"], p): f for e in entries for p, f in (e["files"] | e.get("extra", {})).items()}
    table = []
    for threads in sorted({1, os.cpu_count() or 1}):
        t = time_files(files, size, reps, threads)
        for lv in entries:
            ref = t[lv["ref"]]
            for p in lv["files"]:
                m = t[(lv["key"], p)]
                table.append({**{k: lv[k] for k in ("source", "round", "macs", "params", "channels")},
                              "precision": p, "threads": threads, "reps": reps,
                              **{f"batch{b}_ms": m[f"batch{b}"] * 1e3 for b in (1, 32)},
                              **{f"batch{b}_vs_dense": m[f"batch{b}"] / ref[f"batch{b}"] for b in (1, 32)}})
    return table


def frontier(table: list[dict], curves: Path, out: Path) -> str:
    """Test AUC and FNR against batch-1 latency (1 thread), fp32 and int8 panels; '' when there is nothing to draw."""
    import pandas as pd

    files = sorted(curves.glob("*.csv")) if curves.is_dir() else []
    frames = [pd.read_csv(f) for f in files]
    df = pd.concat(frames) if frames else pd.DataFrame()
    if df.empty or not (df["kind"] == "channel").any():
        return ""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lat = {(r["round"], r["precision"]): r["batch1_ms"] for r in table
           if r["threads"] == 1 and not str(r["source"]).startswith("export")}
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex="col")
    for col, prec in enumerate(("fp32", "int8")):
        for row_, key, label in ((0, "auc", "test AUC-ROC"), (1, "fnr", "test FNR (argmax)")):
            ax = axes[row_][col]
            for method, g in df[df["kind"].isin(["scenario", "channel", "reinit"])].groupby("method"):
                g = g.sort_values("round")
                kind = g["kind"].iloc[0]
                x = np.array([lat[(0, prec)]] * len(g) if kind == "scenario"
                             else [lat.get((k, prec), np.nan) for k in g["round"]])
                y, half = g[key].to_numpy(float), g[f"{key}_ci95"].fillna(0).to_numpy(float)
                order = np.argsort(x, kind="stable")  # measured latency need not fall with every round: draw by x
                x, y, half = x[order], y[order], half[order]
                style = {"scenario": "o", "channel": "s-", "reinit": "^--"}[kind]
                line, = ax.plot(x, y, style, label=f"{method} ({'weight' if kind == 'scenario' else kind})", ms=4)
                lo, hi = np.clip(y - half, 0, 1), np.clip(y + half, 0, 1)  # AUC and FNR live in [0, 1]
                ax.fill_between(x, lo, hi, alpha=0.15, color=line.get_color()) if kind != "scenario" else \
                    ax.errorbar(x, y, yerr=[y - lo, hi - y], fmt="none", alpha=0.4, color=line.get_color())
            ax.set_xscale("log")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            if row_ == 0:
                ax.set_title(f"{prec} ONNX, batch 1, 1 thread (dense fp32: {lat[(0, 'fp32')]:.2f} ms)")
            else:
                ax.set_xlabel("latency per image, ms (log scale; measured on this machine)")
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return str(out.relative_to(ROOT) if out.is_relative_to(ROOT) else out)


def run(reps: int = 40, export: Path = ROOT / "models" / "export_channel", out: Path | None = OUT,
        params_path: Path = ROOT / "params.yaml") -> dict:
    from classprune.config import load_params

    params = load_params(params_path)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        table = measure(params, reps, export, Path(tmp))
    drawn = ""
    if out is not None:
        write_table(out, table, COLUMNS)
        drawn = frontier(table, ROOT / "reports" / "curves" / "test", FRONTIER)
    notes = [f"channel tickets, onnxruntime, medians; ratios to the dense fp32 file in the same run "
             f"({time.perf_counter() - started:.0f} s){'; frontier: ' + drawn if drawn else ''}:"]
    rows = []
    for r in table:
        speed = {b: 1 / r[f"batch{b}_vs_dense"] for b in (1, 32)}
        notes.append(f"  {r['source']} round {r['round']} {r['precision']}, {r['threads']} thread(s): "
                     f"MACs {r['macs'] / 1e6:.1f} M, batch 1 {r['batch1_ms']:.3f} ms ({speed[1]:.2f}x faster), "
                     f"batch 32 {r['batch32_ms']:.2f} ms ({speed[32]:.2f}x faster)")
        if r["threads"] == 1 and r["round"] != 0 and (str(r["source"]).startswith("export") or r["round"] == len(params.prune.rounds)):
            bar = TARGETS[r["precision"]]
            rows.append(row(f"onnxruntime batch 32, 1 thread, channel {r['source']} round {r['round']} "
                            f"{r['precision']} vs dense fp32", ours=r["batch32_ms"],
                            reference=r["batch32_ms"] / r["batch32_vs_dense"], unit="ms", ratio=speed[32],
                            ratio_name="faster", target=f">= {bar:g}x at batch 1 and 32",
                            met=min(speed.values()) >= bar, note=f"batch 1: {speed[1]:.2f}x"))
    return {"name": "channel_onnx", "rows": rows, "notes": notes, "details": table}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=40)
    p.add_argument("--export", type=Path, default=ROOT / "models" / "export_channel")
    a = p.parse_args(argv)
    print_result(run(a.reps, a.export))


if __name__ == "__main__":
    main()
