"""Collect an evidence run (a clone where `classprune profile evidence --write` ran) into reports/evidence/runs/.

    python experiments/evidence.py collect CLONE --bits avx2      # or native
    dvc repro reports/evidence/dvc.yaml                            # the verdicts
    python experiments/evidence.py readme                          # the README's headline block from them

Writes ``reports/evidence/runs/<bits>/``: ``rounds.csv`` (the report stage's own loader over the seeds whose
result files exist: weight chains and channel chains each by their own seeds, so a run cut short is collected
seed by seed), the clone's ``params.yaml``, and
``provenance.json`` (the clone's commit, the CPU model, cores and torch's kernels under its cpu_isa, the seeds).
The `verdicts` stage (dvc.yaml) reads them. The seeds a collection holds are the seeds that finished, never a
choice: a seed is left out only while a result file of it is missing.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from classprune import io  # noqa: E402
from classprune.config import load_params  # noqa: E402
from classprune.edge.onnx_files import cpu_features  # noqa: E402
from classprune.isa import PIN_ENV  # noqa: E402
from classprune.paths import declared_results  # noqa: E402
from classprune.reporting.report import load_results  # noqa: E402

RUNS = ROOT / "reports" / "evidence" / "runs"


def _with(params, **run):
    return params.model_copy(update={"run": params.run.model_copy(update=run)})


def _recorded(clone: Path, seed: int) -> dict[str, str]:
    """{result path: md5} of the seed's lock entries whose stage read this clone's data cache (a results file
    committed from another run, with another split, is not among them)."""
    cache_md5 = next(o["md5"] for o in yaml.safe_load((clone / "dvc.lock").read_text())["stages"]["cache"]["outs"])
    lock = clone / "pipelines" / f"seed_{seed}" / "dvc.lock"
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}) if lock.is_file() else {}
    return {out["path"]: out["md5"] for stage in stages.values()
            if any(d["path"] == "data/cache" and d.get("md5") == cache_md5 for d in stage.get("deps", []))
            for out in stage.get("outs", [])}


def finished(params, clone: Path) -> dict[str, list[int]]:
    """{"weight": seeds whose weight chains have every result file, "channel": seeds whose channel tickets and
    reinit controls have theirs}: the seeds a collection holds, per granularity. A result file counts when its
    md5 is the one its seed's lock recorded from this run."""
    recorded = {seed: _recorded(clone, seed) for seed in params.run.seeds}

    def done(seed: int, **run) -> bool:
        return all((clone / rel).is_file() and recorded[seed].get(str(rel)) == hashlib.md5((clone / rel).read_bytes()).hexdigest()
                   for rel in declared_results(_with(params, seeds=[seed], **run)))

    return {"weight": [s for s in params.run.seeds if done(s, channel_scenarios=[])],
            "channel": [s for s in params.run.seeds if done(s)]}


def load(params, clone: Path, seeds: dict[str, list[int]]) -> pd.DataFrame:
    """The report stage's own rows: the weight chains of seeds["weight"], every chain of seeds["channel"]."""
    frames = []
    if seeds["weight"]:
        frames.append(load_results(_with(params, seeds=seeds["weight"], channel_scenarios=[]), clone))
    if seeds["channel"]:
        frames.append(load_results(_with(params, seeds=seeds["channel"]), clone))
    df = pd.concat(frames, ignore_index=True).drop_duplicates(["method", "seed", "round", "split"])
    return df.sort_values(["method", "seed", "round", "split"]).reset_index(drop=True)


def cpu() -> dict:
    info = cpu_features()
    return {"cpu": info["model"] or platform.processor(), "cores": os.cpu_count(),
            "avx512f": "avx512f" in info["flags"], "avx512_vnni": "avx512_vnni" in info["flags"]}


def collect(clone: Path, bits: str) -> Path:
    params = load_params(clone / "params.yaml")
    if params.profile != "evidence":
        raise SystemExit(f"error: {clone}/params.yaml is profile {params.profile!r}, not evidence")
    if params.train.cpu_isa != bits:
        raise SystemExit(f"error: {clone} ran train.cpu_isa {params.train.cpu_isa!r}, not {bits!r}")
    seeds = finished(params, clone)
    if not seeds["weight"]:
        raise SystemExit(f"error: no seed of {clone} has its weight chains' result files yet")
    df = load(params, clone, seeds)
    out = RUNS / bits
    out.mkdir(parents=True, exist_ok=True)
    with io.atomic_path(out / "rounds.csv") as tmp:
        df.to_csv(tmp, index=False, lineterminator="\n")
    shutil.copyfile(clone / "params.yaml", out / "params.yaml")
    commit = subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    capability = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                                capture_output=True, text=True, env={**os.environ, **PIN_ENV.get(bits, {})}).stdout.strip()
    io.write_json(out / "provenance.json", {"commit": commit, "cpu_isa": bits, "torch_kernels": capability,
                                            **cpu(), "seeds": seeds, "n_seeds": {k: len(v) for k, v in seeds.items()},
                                            "declared_seeds": params.run.seeds})
    return out


def readme(path: Path = ROOT / "README.md") -> None:
    """Put reports/evidence/headline.md (the verdicts stage's) between the README's headline markers."""
    start, end = "<!-- headline:start -->\n", "<!-- headline:end -->"
    text = path.read_text()
    a, b = text.index(start) + len(start), text.index(end)
    path.write_text(text[:a] + (ROOT / "reports" / "evidence" / "headline.md").read_text() + text[b:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect", help="copy a clone's finished seeds into reports/evidence/runs/<bits>/")
    c.add_argument("clone", type=Path)
    c.add_argument("--bits", choices=("avx2", "native"), required=True)
    sub.add_parser("readme", help="the README's headline table from reports/evidence/headline.md")
    a = p.parse_args()
    if a.cmd == "readme":
        return readme()
    out = collect(a.clone.resolve(), a.bits)
    print(json.dumps(json.loads((out / "provenance.json").read_text()), indent=1))


if __name__ == "__main__":
    main()
