"""The committed dvc.lock (and so every committed report) was produced by this code and these params.

In a fresh clone the outputs are missing (DVC's cache is not in git), so `dvc status` lists them as
deleted or not in cache; anything else among the deps (a modified source file, a changed param) means
the committed results are stale: rerun `make repro`, or `dvc commit` after checking that a change is
output-neutral.
"""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _stale_deps(status: dict) -> dict[str, dict]:
    stale = {}
    for stage, entries in status.items():
        for entry in entries:
            deps = entry.get("changed deps", {}) if isinstance(entry, dict) else {}
            changed = {path: state for path, state in deps.items() if state != "deleted"}
            if changed:
                stale[stage] = changed
    return stale


def test_stale_deps_are_found_and_missing_outputs_are_not():
    status = {"lt@red-0-level1": [{"changed deps": {"src/classprune/train.py": "modified",
                                                    "models/red/seed_0/round_1/mask.pt": "deleted"}},
                                  {"changed outs": {"models/red/seed_0/round_2/mask.pt": "not in cache"}}],
              "report": [{"changed deps": {"params.yaml": {"report.target_fnr": "modified"}}}],
              "split": [{"changed deps": {"data/prepared": "deleted"}}], "prepare": ["always changed"]}
    assert _stale_deps(status) == {"lt@red-0-level1": {"src/classprune/train.py": "modified"},
                                   "report": {"params.yaml": {"report.target_fnr": "modified"}}}


def test_the_committed_lock_matches_the_code_and_params():
    proc = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    status = json.loads(proc.stdout or "{}")
    stale = _stale_deps(status)
    assert not stale, (f"dvc.lock is stale for {len(stale)} stages (first: {next(iter(stale.items()))}); "
                       "rerun `make repro`, or `dvc commit` a change shown to be output-neutral")
