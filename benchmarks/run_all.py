"""Run every benchmark, write reports/bench.json (atomically) and print a markdown table for the README.

    python benchmarks/run_all.py                       # prune, masked step, channel step, cpu_isa, data loading, export, ONNX files,
                                                       # DVC's per-stage bookkeeping, old vs new layout (+15 min)
    python benchmarks/run_all.py --only bookkeeping    # just that one (also: benchmarks/bench_dvc_bookkeeping.py)
    python benchmarks/run_all.py --pipeline            # + Prefect DAG vs serial dvc repro, no-op repro (tiny)
    python benchmarks/run_all.py --pipeline --profile default --workers 2
    python benchmarks/run_all.py --quick               # fewer repetitions, for a smoke test

Each benchmark measures its candidate and reference side by side in this one process, interleaving the
repetitions and taking medians, so the ratios hold on a busy machine even when absolute times do not.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_channel_step  # noqa: E402
import bench_dvc_bookkeeping  # noqa: E402
import bench_export  # noqa: E402
import bench_isa  # noqa: E402
import bench_loader  # noqa: E402
import bench_onnx  # noqa: E402
import bench_pipeline  # noqa: E402
import bench_prune  # noqa: E402
import bench_step  # noqa: E402
import bench_trainlog  # noqa: E402
from _common import ROOT, machine, machine_line, markdown_table, set_threads, write_markdown  # noqa: E402

from classprune.io import write_json  # noqa: E402

BENCHMARKS = ("prune", "step", "channel_step", "trainlog", "isa", "loader", "export", "onnx", "bookkeeping")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    p.add_argument("--pipeline", action="store_true", help="also time the whole pipeline (minutes)")
    p.add_argument("--profile", default="tiny", help="profile of --pipeline: tiny, default (params.yaml) or a path")
    p.add_argument("--workers", type=int, default=2, help="Prefect workers of --pipeline")
    p.add_argument("--keep", metavar="DIR", help="--pipeline builds its two copies in DIR and keeps them")
    p.add_argument("--threads", type=int, help="torch threads of the in-process benchmarks (default: torch's)")
    p.add_argument("--quick", action="store_true", help="fewer repetitions (smoke test; noisier)")
    p.add_argument("--out", default=str(ROOT / "reports" / "bench.json"))
    a = p.parse_args(argv)

    set_threads(a.threads)
    info = machine()
    started = time.perf_counter()
    results = []
    if "prune" in a.only:
        results.append(bench_prune.run(reps=3 if a.quick else 5))
    if "step" in a.only:
        results.append(bench_step.run(reps=8 if a.quick else 30))
    if "channel_step" in a.only:
        results.append(bench_channel_step.run(reps=5 if a.quick else 20))
    if "trainlog" in a.only:
        results.append(bench_trainlog.run(steps=200, reps=3 if a.quick else 8))
    if "isa" in a.only:
        results.append(bench_isa.run(reps=8 if a.quick else 20, rounds=2 if a.quick else 4))
    if "loader" in a.only:
        results.append(bench_loader.run(reps=3 if a.quick else 5, train_reps=2 if a.quick else 3,
                                        train_batches=2 if a.quick else 3))
    if "export" in a.only:
        results.append(bench_export.run(reps=10 if a.quick else 50))
    if "onnx" in a.only:
        results.append(bench_onnx.run(reps=8 if a.quick else 40))
    if "bookkeeping" in a.only:   # also writes its own reports/bench_dvc_bookkeeping.json (worker_scaling reads it)
        results.append(bench_dvc_bookkeeping.run(seeds=(1, 5) if a.quick else bench_dvc_bookkeeping.SEEDS,
                                                 reps=1 if a.quick else 3, profile_seeds=None if a.quick else 20))
    if a.pipeline:
        results.append(bench_pipeline.run(a.profile, a.workers, a.keep))
    rows = [r for res in results for r in res["rows"]]
    table = markdown_table(rows)
    report = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/run_all.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": info,
        "seconds": round(time.perf_counter() - started, 1),
        "rows": rows,
        "table_markdown": table,
        "benchmarks": {res["name"]: {k: v for k, v in res.items() if k != "rows"} for res in results},
    }
    write_json(a.out, report)
    write_markdown(report, Path(a.out).with_suffix(".md"))

    for res in results:
        for line in res["notes"]:
            print(line)
    print()
    print(f"Machine: {machine_line(info)}.")
    print()
    print(table)
    if not a.pipeline:
        print("\n(pipeline wall time and no-op dvc repro: run with --pipeline)")
    print(f"\nwritten: {Path(a.out).resolve().relative_to(ROOT) if Path(a.out).resolve().is_relative_to(ROOT) else a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
