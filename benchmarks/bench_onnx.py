"""The shipped ONNX files on the edge runtime: session load time and latency per precision and storage.

For each exported scenario (models/export/<scenario>/, written by `dvc repro export`) and each ONNX file in
it: onnxruntime CPU, 1 intra-op thread, load time (InferenceSession creation) and latency at batch 1 and 32,
all files of one scenario interleaved (ABBA) and reported as medians and as ratios to the dense fp32
``model.onnx`` of the same scenario. Writes reports/export_latency.csv. Without an export (a fresh clone),
it measures a stand-in: AlexNet-256-8-8-2 pruned to 1.56 % by global magnitude, written by the same code.

Channel tickets (bench_channels.py, run from here): the compact fp32 and int8 file of every channel level
and of every channel export against the dense fp32 file, at 1 thread and all cores: reports/channel_latency.csv
and the latency frontier reports/frontier_latency.png.

    python benchmarks/bench_onnx.py [--reps 40] [--export models/export] [--no-channels]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from _common import ROOT, interleaved, median, print_result, row, write_table  # noqa: E402

OUT = ROOT / "reports" / "export_latency.csv"
COLUMNS = ("scenario", "file", "load_ms", "batch1_ms", "batch32_ms", "load_vs_dense", "batch1_vs_dense",
           "batch32_vs_dense", "reps")


def _stand_in(tmp: Path) -> dict[str, Path]:
    """An export of a 1.56 % model without data: fp32, fp16, int8 (random calibration), each also sparse."""
    from classprune.edge import onnx_files
    from classprune.lottery.masks import full_mask
    from classprune.models.network import build_model
    from classprune.lottery.pruning import keep_top

    model = build_model(seed=0)
    state = model.state_dict()
    mask = keep_top({n: state[n].abs() for n in full_mask(model)}, full_mask(model), 0.015625)
    model.load_state_dict({n: t * mask[n] if n in mask else t for n, t in state.items()})
    d = tmp / "stand_in"
    d.mkdir()
    onnx_files.export_onnx(model.eval(), 64, d / onnx_files.FILES["fp32"], {})
    onnx_files.to_fp16(d / onnx_files.FILES["fp32"], d / onnx_files.FILES["fp16"])
    calib = [np.random.default_rng(i).standard_normal((32, 3, 64, 64)).astype(np.float32) for i in range(2)]
    onnx_files.quantize_int8(d / onnx_files.FILES["fp32"], d / onnx_files.FILES["int8"], calib)
    for p in ("fp32", "fp16", "int8"):
        onnx_files.to_sparse_initializers(d / onnx_files.FILES[p], d / onnx_files.FILES[f"{p}_sparse"])
    return {"stand-in 1.56 %": d}


def _exports(export: Path) -> dict[str, Path]:
    index = export / "index.json"
    if not index.is_file():
        return {}
    return {name: Path(path) if Path(path).is_absolute() else ROOT / path
            for name, path in json.loads(index.read_text())["exported"].items()}


def measure(d: Path, reps: int) -> list[dict]:
    from classprune.edge import onnx_files

    size = json.loads((d / "deploy.json").read_text())["image_size"] if (d / "deploy.json").is_file() else 64
    files = [f for f in onnx_files.FILES.values() if (d / f).is_file()]
    x1 = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    x32 = np.random.default_rng(1).standard_normal((32, 3, size, size)).astype(np.float32)
    sessions = {f: onnx_files.session(d / f, threads=1) for f in files}

    def load(f):
        return lambda: onnx_files.session(d / f, threads=1)

    def infer(f, x):
        return lambda: sessions[f].run(["score"], {"image": x})

    times = {}
    for tag, cases in (("load", {f: load(f) for f in files}), ("batch1", {f: infer(f, x1) for f in files}),
                       ("batch32", {f: infer(f, x32) for f in files})):
        n = max(4, reps // 4) if tag == "load" else reps // 2 if tag == "batch32" else reps
        times[tag] = {f: median(v) for f, v in interleaved(cases, n, warmup=2).items()}
    dense = "model.onnx"
    return [{"file": f, **{f"{t}_ms": times[t][f] * 1e3 for t in times},
             **{f"{t}_vs_dense": times[t][f] / times[t][dense] for t in times}, "reps": reps} for f in files]


def run(reps: int = 40, export: Path = ROOT / "models" / "export", out: Path | None = OUT,
        channels: bool = True) -> dict:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        targets = _exports(export) or _stand_in(Path(tmp))
        table = [{"scenario": name, **r} for name, d in targets.items() for r in measure(d, reps)]
    if out is not None:
        write_table(out, table, COLUMNS)
    notes = [f"onnxruntime, 1 thread, medians; ratios to the dense fp32 model.onnx of the same scenario "
             f"({time.perf_counter() - started:.0f} s):"]
    for r in table:
        notes.append(f"  {r['scenario']} {r['file']}: load {r['load_ms']:.1f} ms ({r['load_vs_dense']:.2f}x), "
                     f"batch 1 {r['batch1_ms']:.2f} ms ({r['batch1_vs_dense']:.2f}x), "
                     f"batch 32 {r['batch32_ms']:.1f} ms ({r['batch32_vs_dense']:.2f}x)")
    rows = []
    for r in table:
        if r["file"] in ("model_int8.onnx", "model_sparse.onnx"):
            rows.append(row(f"onnxruntime batch 32, 1 thread, {r['scenario']}: {r['file']} vs dense fp32 model.onnx",
                            ours=r["batch32_ms"], reference=r["batch32_ms"] / r["batch32_vs_dense"], unit="ms",
                            ratio=1 / r["batch32_vs_dense"], ratio_name="faster", target="measured", met=True,
                            note=f"load {r['load_vs_dense']:.2f}x of dense"))
    details = {"files": table}
    if channels:
        import bench_channels

        ch = bench_channels.run(reps, out=None if out is None else bench_channels.OUT)
        rows += ch["rows"]
        notes += ch["notes"]
        details["channel_levels"] = ch["details"]
    return {"name": "onnx", "rows": rows, "notes": notes, "details": details}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=40)
    p.add_argument("--export", type=Path, default=ROOT / "models" / "export")
    p.add_argument("--no-channels", action="store_true", help="leave out the channel levels and exports")
    a = p.parse_args(argv)
    print_result(run(a.reps, a.export, channels=not a.no_channels))


if __name__ == "__main__":
    main()
