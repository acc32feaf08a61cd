"""Collect an evidence run (a clone where `classprune profile evidence --write` ran) into reports/evidence/runs/.

    python experiments/evidence.py collect CLONE --bits avx2      # or native

Writes ``reports/evidence/runs/<bits>/``: ``rounds.csv`` (the report stage's own loader over the seeds whose
every result file exists, so a run cut short is collected seed by seed), the clone's ``params.yaml``, and
``provenance.json`` (the clone's commit, the CPU model, cores and torch's kernels under its cpu_isa, the seeds).
The `verdicts` stage (dvc.yaml) reads them. The seeds a collection holds are the seeds that finished, never a
choice: a seed is left out only while a result file of it is missing.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from classprune import io  # noqa: E402
from classprune.config import load_params  # noqa: E402
from classprune.isa import PIN_ENV  # noqa: E402
from classprune.paths import declared_results  # noqa: E402
from classprune.reporting.report import load_results  # noqa: E402

RUNS = ROOT / "reports" / "evidence" / "runs"


def finished_seeds(params, clone: Path) -> list[int]:
    """Seeds of run.seeds whose every declared result file (every chain's evaluate) exists in the clone."""
    done = []
    for seed in params.run.seeds:
        one = params.model_copy(update={"run": params.run.model_copy(update={"seeds": [seed]})})
        if all((clone / rel).is_file() for rel in declared_results(one)):
            done.append(seed)
    return done


def cpu() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), [])
    return {"cpu": model, "cores": len([1 for line in Path("/proc/cpuinfo").read_text().splitlines()
                                        if line.startswith("processor")]),
            "avx512f": "avx512f" in flags, "avx512_vnni": "avx512_vnni" in flags}


def collect(clone: Path, bits: str) -> Path:
    params = load_params(clone / "params.yaml")
    if params.profile != "evidence":
        raise SystemExit(f"error: {clone}/params.yaml is profile {params.profile!r}, not evidence")
    if params.train.cpu_isa != bits:
        raise SystemExit(f"error: {clone} ran train.cpu_isa {params.train.cpu_isa!r}, not {bits!r}")
    seeds = finished_seeds(params, clone)
    if not seeds:
        raise SystemExit(f"error: no seed of {clone} has all its result files yet")
    done = params.model_copy(update={"run": params.run.model_copy(update={"seeds": seeds})})
    df = load_results(done, clone)
    out = RUNS / bits
    out.mkdir(parents=True, exist_ok=True)
    with io.atomic_path(out / "rounds.csv") as tmp:
        df.sort_values(["method", "seed", "round", "split"]).to_csv(tmp, index=False, lineterminator="\n")
    shutil.copyfile(clone / "params.yaml", out / "params.yaml")
    commit = subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    capability = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                                capture_output=True, text=True, env={**os.environ, **PIN_ENV.get(bits, {})}).stdout.strip()
    io.write_json(out / "provenance.json", {"commit": commit, "cpu_isa": bits, "torch_kernels": capability,
                                            **cpu(), "seeds": seeds, "n_seeds": len(seeds),
                                            "declared_seeds": params.run.seeds})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect", help="copy a clone's finished seeds into reports/evidence/runs/<bits>/")
    c.add_argument("clone", type=Path)
    c.add_argument("--bits", choices=("avx2", "native"), required=True)
    a = p.parse_args()
    out = collect(a.clone.resolve(), a.bits)
    print(json.dumps(json.loads((out / "provenance.json").read_text()), indent=1))


if __name__ == "__main__":
    main()
