"""Choose the default pruning rule on the validation split: the lottery-ticket literature's rules side by side.

Each rule runs the real pipeline (`dvc repro evaluate`: init, every LT round and the evaluation of red and
black over 5 seeds) in its own copy of this checkout, sharing this checkout's DVC cache, so the data and W0
are the ones `make repro` uses. Only val numbers are collected: the test split never enters the choice.

    python experiments/pruning_rules.py --jobs 2            # run (resumable: DVC skips what is done)
    python experiments/pruning_rules.py --collect-only      # rebuild the table from the copies

Writes reports/pruning_rules.csv (one row per rule, scenario, seed and round, val split) and
reports/pruning_rules.md (the table params.yaml and the README quote).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import yaml

from classprune.diagnose import CONV

ROOT = Path(__file__).resolve().parents[1]
COMMON = {"run.scenarios": ["red", "black"], "run.seeds": [0, 1, 2, 3, 4], "baselines.methods": []}
WEIGHTS_ONLY = {"prune.include_biases": False}
RULES: dict[str, dict] = {
    # rahimentezari/Sensys-ml2020: every tensor on its own, biases and the output layer included
    "authors": {"prune.criterion": "magnitude_increase", "prune.scope": "layerwise", "prune.include_biases": True},
    # facebookresearch/open_lth: |W|, one global threshold, weights only, the output layer left whole
    "open_lth": {"prune.criterion": "magnitude", "prune.scope": "global", **WEIGHTS_ONLY,
                 "prune.ignore": ["classifier.6.weight"]},
    # Frankle & Carbin 2019: |W| per layer, weights only, the output layer at half the rate
    "frankle_carbin": {"prune.criterion": "magnitude", "prune.scope": "layerwise", **WEIGHTS_ONLY,
                       "prune.layer_rates": {"classifier.6.weight": 0.25}},
    # the authors' rule with rounds 4x as long, so the weights move further before they are scored;
    # 3 seeds and rounds to 6.25 % to fit the session's CPU time
    "authors_800": {"prune.criterion": "magnitude_increase", "prune.scope": "layerwise", "prune.include_biases": True,
                    "train.iterations": 800, "run.seeds": [0, 1, 2],
                    "prune.rounds": [{"k": k, "prev": k - 1} for k in range(1, 6)]},
}
COPIES = Path(os.environ.get("CLASSPRUNE_RULES_DIR", "/tmp/classprune-rules"))


def set_key(tree: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        tree = tree.setdefault(p, {})
    tree[leaf] = value


def make_copy(name: str) -> Path:
    """This checkout's tracked and untracked files (not its outputs), params overridden, cache shared."""
    dest = COPIES / name
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src, dst = ROOT / rel, dest / rel
        if src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists() or dst.read_bytes() != src.read_bytes():
                shutil.copy2(src, dst)
    if not (dest / ".git").exists():
        subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in {**COMMON, **RULES[name]}.items():
        set_key(params, key, value)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["dvc", "cache", "dir", "--local", str(ROOT / ".dvc" / "cache")], cwd=dest, check=True)
    return dest


def run(name: str) -> int:
    dest = make_copy(name)
    env = {**os.environ, "PYTHONPATH": str(dest / "src"), "CLASSPRUNE_THREADS": "1"}
    log = (COPIES / f"{name}.log").open("a")
    subprocess.run(["dvc", "checkout", "prepare", "split", "cache", "pretrain"], cwd=dest, env=env,
                   stdout=log, stderr=subprocess.STDOUT)
    return subprocess.run(["dvc", "repro", "evaluate"], cwd=dest, env=env, stdout=log,
                          stderr=subprocess.STDOUT).returncode


def collect(names: list[str]) -> pd.DataFrame:
    rows = []
    for name in names:
        cfg = {**COMMON, **RULES[name]}
        for seed in cfg["run.seeds"]:
            for scenario in cfg["run.scenarios"]:
                path = COPIES / name / "reports" / "rounds" / f"seed_{seed}" / f"{scenario}.json"
                if path.is_file():
                    rows += _rows(name, json.loads(path.read_text()))
    return pd.DataFrame(rows)


def _rows(name: str, r: dict) -> list[dict]:
    """One row per round of one result file; a file the copy's evaluate stage has not rewritten (no
    diagnosis: the checkout's own committed result) is skipped."""
    rows = []
    for rd in r["rounds"]:
        if "diagnosis" not in rd:
            return []
        d, val = rd["diagnosis"], rd["val"]
        kept = d.get("w0_kept") or {}
        rows.append({"rule": name, "scenario": r["method"], "seed": r["seed"], "round": rd["round"],
                     "remaining": rd["remaining"], "remaining_all": rd.get("remaining_all"),
                     "val_auc": val["auc"], "val_fnr": val["fnr"], "val_fpr": val["fpr"],
                     "constant": val["constant"], "score_constant": d["score_constant"], "cause": d["cause"],
                     **{f"dead_{k}": v for k, v in d["dead"].items()}, **{f"w0_kept_{c}": kept.get(c) for c in CONV}})
    return rows


def table(df: pd.DataFrame) -> str:
    """Per rule, scenario and level: mean / min val AUC over seeds, dead and constant models."""
    df = df.assign(w0_kept_conv=df[[f"w0_kept_{c}" for c in CONV]].mean(axis=1))
    g = df.groupby(["rule", "scenario", "round"], sort=False)
    agg = g.agg(remaining=("remaining", "mean"), seeds=("seed", "nunique"), auc=("val_auc", "mean"),
                auc_min=("val_auc", "min"), dead=("score_constant", "sum"), const=("constant", "sum"),
                fnr=("val_fnr", "mean"), kept=("w0_kept_conv", "mean")).reset_index()
    lines = ["| rule | scenario | " + " | ".join(f"{r * 100:g} %" for r in sorted(agg["remaining"].round(4).unique(),
                                                                                   reverse=True)) + " |"]
    levels = sorted(agg["remaining"].round(4).unique(), reverse=True)
    lines.append("|---|---|" + "---:|" * len(levels))
    for (rule, sc), g2 in agg.groupby(["rule", "scenario"], sort=False):
        cells = {round(r.remaining, 4): f"{r.auc:.3f} ({r.auc_min:.3f}) {int(r.dead)}D {int(r.const)}C"
                 for r in g2.itertuples()}
        lines.append(f"| {rule} | {sc} | " + " | ".join(cells.get(lv, "") for lv in levels) + " |")
    kept = ["", "Share of W0's conv-feature magnitude the mask keeps (mean over the 5 conv layers and seeds):", "",
            "| rule | scenario | " + " | ".join(f"{lv * 100:g} %" for lv in levels) + " |",
            "|---|---|" + "---:|" * len(levels)]
    for (rule, sc), g2 in agg.groupby(["rule", "scenario"], sort=False):
        cells = {round(r.remaining, 4): f"{r.kept:.3f}" for r in g2.itertuples()}
        kept.append(f"| {rule} | {sc} | " + " | ".join(cells.get(lv, "") for lv in levels) + " |")
    head = ["Val split only. Cell: mean val AUC over seeds (lowest seed), D = dead models (one score for every "
            "image, AUC 0.500), C = constant predictors at argmax (one class for every image).", ""]
    return "\n".join(head + lines + kept) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", nargs="*", default=list(RULES), choices=list(RULES))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--collect-only", action="store_true")
    args = ap.parse_args(argv)
    COPIES.mkdir(parents=True, exist_ok=True)
    if not args.collect_only:
        with ThreadPoolExecutor(args.jobs) as pool:
            codes = dict(zip(args.rules, pool.map(run, args.rules)))
        print(codes, file=sys.stderr)
    df = collect(args.rules)
    df.sort_values(["rule", "scenario", "seed", "round"]).to_csv(ROOT / "reports" / "pruning_rules.csv", index=False)
    (ROOT / "reports" / "pruning_rules.md").write_text(table(df))
    print(table(df))
    return 0


if __name__ == "__main__":
    sys.exit(main())
