"""Start-up cost of each stage kind: ``python -X importtime`` of what the stage imports before it computes
(classprune.cli resolving the step, as ``stages/<kind>.py`` does), in a fresh interpreter each time.

Prints, per stage kind, the median over ``--reps`` runs of the total import time and the three most
expensive packages (by their modules' own import time); the interpreter's own start is the ``-c pass`` row.

    python benchmarks/bench_startup.py [--reps 3]
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT  # noqa: E402

LINE = re.compile(r"import time:\s+(\d+) \|\s+\d+ \| *(\S+)")


def import_profile(code: str) -> tuple[float, dict[str, float]]:
    """Total seconds of imports and seconds per package (its modules' own import time), for ``python -X importtime -c code``."""
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stderr
    top: dict[str, float] = defaultdict(float)
    for m in LINE.finditer(err):  # self times, so nested imports are not counted twice
        top[m.group(2).split(".")[0]] += int(m.group(1)) / 1e6
    return sum(top.values()), dict(top)


# what a step imports lazily once it runs (model builders, metrics, figures, export), beyond _resolve's imports
RUNTIME = {
    "prepare": ["PIL.Image"], "cache": ["PIL.Image"], "pretrain": ["torchvision.models"],
    "init": ["torchvision.models"], "lt": ["torchvision.models", "classprune.data.augment"],
    "evaluate": ["torchvision.models", "sklearn.metrics"], "report": ["sklearn.metrics", "matplotlib.pyplot"],
    "baseline": ["torchvision.models", "sklearn.metrics", "classprune.data.augment"],
    "export": ["torchvision.models", "onnx", "onnxruntime"],
}


def run(reps: int = 3) -> dict:
    from classprune.cli import STEPS

    cases = {"(interpreter)": "pass"} | {
        step: "; ".join([f"from classprune.cli import _resolve; _resolve({step!r})",
                         *(f"import {m}" for m in RUNTIME.get(step, []))]) for step in STEPS}
    rows = {}
    for name, code in cases.items():
        runs = [import_profile(code) for _ in range(reps)]
        total = statistics.median(t for t, _ in runs)
        per = defaultdict(list)
        for _, top in runs:
            for pkg, s in top.items():
                per[pkg].append(s)
        heavy = sorted(((statistics.median(v), k) for k, v in per.items()), reverse=True)[:3]
        rows[name] = {"import_s": total, "heaviest": [(k, round(s, 3)) for s, k in heavy]}
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=3)
    a = p.parse_args(argv)
    rows = run(a.reps)
    print("| stage kind | imports (s) | heaviest packages (s) |")
    print("|---|---:|---|")
    for name, r in rows.items():
        heavy = ", ".join(f"{k} {s:.2f}" for k, s in r["heaviest"])
        print(f"| {name} | {r['import_s']:.2f} | {heavy} |")


if __name__ == "__main__":
    main()
