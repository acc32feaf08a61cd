"""Does an int8 file decide the same on a CPU without VNNI? Choose the int8 settings on val so that it does.

onnxruntime's int8 kernels on AVX2 without VNNI multiply u8 x s8 pairs with VPMADDUBSW, whose 16-bit pair sums
saturate; VNNI kernels (and AVX-512 VNNI) accumulate in 32 bits. So the same int8 file can score differently
on the two kinds, and a decision shipped from one (threshold, "ships") may not hold on the other (issue 29: a
fresh clone on an AMD EPYC without VNNI shipped other int8 results than the committed table). Candidates:
today's setting (QDQ, s8 activations, s8 symmetric per-channel weights) and the same with ``reduce_range``
(7-bit weights: a pair sum fits 16 bits, so both kinds compute exactly). Each is scored natively and under
QEMU's user-mode emulation of an AVX2 CPU without VNNI (``qemu-x86_64 -cpu Haswell``: onnxruntime picks its
kernels from CPUID, so it runs the non-VNNI code path); outside QEMU this machine's own kernels.

The rule, fixed before looking: a candidate qualifies when its val decisions at its own val-chosen threshold
are identical on both kinds and it ships under the export's val rule (shipped.why_not against the fp32 file);
among those, the smallest val FPR at the FNR target. Test only reports.

    python experiments/int8_cpu.py --model models/export/black   # any dir holding an fp32 model.onnx

Writes reports/int8_cpu.md and reports/int8_cpu.csv (or --out).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = {"s8s8": {"reduce_range": False}, "s8s8_reduce_range": {"reduce_range": True}}
EMULATED_CPU = "Haswell"  # AVX2, FMA, no AVX-512, no VNNI


def qemu() -> str | None:
    return shutil.which("qemu-x86_64")


def score_emulated(model: Path, x: np.ndarray, cpu: str = EMULATED_CPU) -> np.ndarray:
    """Logits of ``model`` on ``x`` as onnxruntime computes them on ``cpu`` (QEMU user mode, 1 thread)."""
    if qemu() is None:
        raise RuntimeError("qemu-x86_64 not found (Debian: apt-get install qemu-user)")
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "x.npy", x)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        cmd = [qemu(), "-cpu", cpu, os.path.realpath(sys.executable), str(Path(__file__).resolve()),
               "--score", str(model), str(Path(tmp) / "x.npy"), str(Path(tmp) / "out.npy")]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"emulated run failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
        return np.load(Path(tmp) / "out.npy")


def score_native(model: Path, x: np.ndarray) -> np.ndarray:
    """Logits on this CPU, 1 thread (plain onnxruntime: the emulated child imports nothing else)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = 1, 1, 3
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    return sess.run(["logits"], {"image": np.ascontiguousarray(x, dtype=np.float32)})[0]


def _split(cache: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    from classprune.edge.shipped import batches

    labels, xs = batches(cache, split, 256)
    return labels, np.concatenate(list(xs))


def compare(model_dir: Path, params, cache: Path, workdir: Path) -> list[dict]:
    """Per candidate and CPU kind: val/test AUC, FNR, FPR at the val threshold chosen natively; flips across kinds."""
    from classprune.edge import onnx_files
    from classprune.edge.export import calibration
    from classprune.evaluation.metrics import binary_metrics, operating_threshold
    from classprune.edge.shipped import why_not

    data = {s: _split(cache, s) for s in ("val", "test")}
    files = {"fp32": model_dir / onnx_files.FILES["fp32"]}
    calib = calibration(params, cache)
    for name, opts in CANDIDATES.items():
        files[name] = workdir / f"{name}.onnx"
        onnx_files.quantize_int8(files["fp32"], files[name], calib, **opts)
    ev, rows, results = params.evaluate, [], {}
    for name, path in files.items():
        kinds = (("native", score_native),) if name == "fp32" else (("native", score_native), ("emulated", score_emulated))
        logits = {(s, kind): fn(path, data[s][1]) for s in data for kind, fn in kinds}
        if name == "fp32":  # the reference only: fp32 kernels are not in question, and emulating them is slow
            logits |= {(s, "emulated"): logits[(s, "native")] for s in data}
        logodds = {k: (v[:, 1] - v[:, 0]).astype(np.float64) for k, v in logits.items()}
        labels = {s: data[s][0] for s in data}
        thr = operating_threshold(labels["val"], logodds[("val", "native")], ev.target_fnr)
        res = {"threshold": thr}
        for s in data:
            res[s] = binary_metrics(labels[s], logodds[(s, "native")], (logodds[(s, "native")] >= thr).astype(int))
        results[name] = res
        for s in data:
            flips = int(np.sum((logodds[(s, "native")] >= thr) != (logodds[(s, "emulated")] >= thr)))
            diff = float(np.max(np.abs(logits[(s, "native")] - logits[(s, "emulated")])))
            for kind in ("native", "emulated"):
                m = binary_metrics(labels[s], logodds[(s, kind)], (logodds[(s, kind)] >= thr).astype(int))
                rows.append({"candidate": name, "cpu": kind, "split": s, "auc": m["auc"], "fnr": m["fnr"],
                             "fpr": m["fpr"], "fn": m["fn"], "fp": m["fp"], "flips_vs_other_cpu": flips,
                             "max_abs_logit_diff": diff})
    for name in CANDIDATES:
        why = why_not(results[name], results["fp32"], ev, params.report.fn_margin)
        for r in rows:
            if r["candidate"] == name:
                r["ships_on_val"] = not why
    return rows


def choose(rows: list[dict]) -> str | None:
    """The rule fixed before looking: identical val decisions on both kinds and ships; then the lowest val FPR."""
    import pandas as pd

    df = pd.DataFrame(rows)
    val = df[(df["split"] == "val") & (df["cpu"] == "native") & (df["candidate"] != "fp32")]
    ok = val[(val["flips_vs_other_cpu"] == 0) & val["ships_on_val"].astype(bool)]
    return None if ok.empty else str(ok.sort_values("fpr").iloc[0]["candidate"])


def markdown(rows: list[dict], chosen: str | None, model_dir: Path, cpu: dict) -> str:
    lines = ["# int8 settings across CPU kinds (val chooses, test reports)", "",
             f"Model: `{model_dir}`. Native CPU: {cpu.get('model')} (flags {', '.join(cpu.get('flags', []))}); "
             f"emulated: QEMU `-cpu {EMULATED_CPU}` (AVX2, no VNNI). Threshold per file chosen natively on val "
             "(val FNR <= target) and applied to both kinds. `flips`: images whose decision differs between the "
             "two kinds at that threshold. fp32 is scored natively only (the reference).", "",
             "| candidate | cpu | split | AUC | FNR | FPR | FN | FP | flips | max abs logit diff | ships (val) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['candidate']} | {r['cpu']} | {r['split']} | {r['auc']:.4f} | {r['fnr']:.3f} | "
                     f"{r['fpr']:.3f} | {r['fn']} | {r['fp']} | {r['flips_vs_other_cpu']} | "
                     f"{r['max_abs_logit_diff']:.2e} | {'yes' if r.get('ships_on_val', True) else 'no'} |")
    lines += ["", f"Chosen by the rule (identical val decisions on both kinds and ships on val, then the lowest "
              f"val FPR): **{chosen or 'none'}**."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, help="a dir holding an fp32 model.onnx of this project")
    p.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    p.add_argument("--cache", type=Path, default=ROOT / "data" / "cache")
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "int8_cpu")
    p.add_argument("--score", nargs=3, metavar=("MODEL", "X", "OUT"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.score:  # inside QEMU: score and leave
        np.save(a.score[2], score_native(Path(a.score[0]), np.load(a.score[1])))
        return
    import pandas as pd

    from classprune.config import load_params
    from classprune.edge.onnx_files import cpu_features

    with tempfile.TemporaryDirectory() as tmp:
        rows = compare(a.model, load_params(a.params), a.cache, Path(tmp))
    chosen = choose(rows)
    pd.DataFrame(rows).to_csv(a.out.with_suffix(".csv"), index=False)
    a.out.with_suffix(".md").write_text(markdown(rows, chosen, a.model, cpu_features()))
    print(a.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
