"""Shared helpers of the benchmarks: interleaved timing, the machine description, the result table.

Every benchmark measures its candidate and its reference side by side in one process: repetitions
alternate between them (ABBA order, so a slow drift of the machine hits both alike) and each side reports
the median of its repetitions. Ratios are therefore comparable even on a busy machine; absolute times are not.
"""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def interleaved(cases: Mapping[str, Callable[[], Any]], reps: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of every case, ``reps`` times each, alternating the order (ABBA ...)."""
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            cases[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        for name in (names if rep % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            cases[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def set_threads(threads: int | None) -> int:
    import torch

    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def machine() -> dict[str, Any]:
    """Where the numbers were measured: they mean little without it."""
    import torch
    import torchvision

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        affinity = os.cpu_count()
    from classprune.edge.onnx_files import cpu_features

    cpu = cpu_features()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu["model"] or platform.processor(),
        "cpu_flags": cpu["flags"],
        "cpu_count": os.cpu_count(),
        "cpus_available": affinity,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": load,
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def row(benchmark: str, *, ours: float, reference: float, unit: str, ratio: float, ratio_name: str,
        target: str, met: bool, note: str = "") -> dict[str, Any]:
    """One line of the results table; ``ours``/``reference`` are medians in ``unit``."""
    return {"benchmark": benchmark, "ours": ours, "reference": reference, "unit": unit, "ratio": ratio,
            "ratio_name": ratio_name, "target": target, "met": bool(met), "note": note}


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    if abs(v) >= 0.1:
        return f"{v:.3f}"
    return f"{v:.3g}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| benchmark | ours | reference | ratio | target | met |", "|---|---:|---:|---:|---|:---:|"]
    for r in rows:
        lines.append(f"| {r['benchmark']} | {_fmt(r['ours'])} {r['unit']} | {_fmt(r['reference'])} {r['unit']} "
                     f"| {_fmt(r['ratio'])}x {r['ratio_name']} | {r['target']} | {'yes' if r['met'] else 'NO'} |")
    return "\n".join(lines)


def machine_line(m: Mapping[str, Any]) -> str:
    return (f"{m['cpu_model']}, {m['cpus_available']} of {m['cpu_count']} CPUs available, torch {m['torch']} "
            f"({m['torch_threads']} threads), Python {m['python']}, {m['platform']}; "
            f"load average at start {m['load_average_at_start']}")


def write_markdown(report: Mapping[str, Any], path: Path) -> None:
    """A result file's table with when, by which command and on what machine it was measured: the docs
    include this file, so the numbers they show are the file's."""
    took = f" ({report['seconds']:.0f} s)" if report.get("seconds") else ""
    path.write_text(f"Measured {report['created']} by `{report['command']}`{took} on "
                    f"{machine_line(report['machine'])}.\n\n{report['table_markdown'].rstrip()}\n")


def print_result(result: Mapping[str, Any]) -> None:
    """Standalone output of one benchmark script."""
    for line in result.get("notes", []):
        print(line)
    print()
    print(markdown_table(result["rows"]))
    sys.stdout.flush()


def write_table(path: Path, rows: list[Mapping[str, Any]], columns: tuple[str, ...]) -> None:
    """A benchmark's table as CSV, floats to 4 significant digits."""
    import csv

    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: f"{r[k]:.4g}" if isinstance(r[k], float) else r[k] for k in columns})
