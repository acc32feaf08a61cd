"""Choose the channel criterion on the validation split: the literature's channel criteria side by side.

Candidates (prune.channel.criterion / scope): the filter's L1 norm (Li et al. 2017) per layer and global,
Torch-Pruning's group L2 norm with its mean normaliser (global), Chen et al.'s refill (ICML 2022) per layer
and global. Each runs the pipeline's own training (classprune.lottery.runner.train_round) for red and black, 5
seeds, every round of prune.rounds, on this checkout's data/cache and pretrained W0 features. Round 1 (the dense network, which no criterion has touched yet) is trained once per scenario and
seed and shared by every candidate. Every round is scored on val only, by its compact network and the
evaluate stage's metric code: the test split is never scored here.

The rule, fixed before any number was seen (as for the weight rule, reports/pruning_rules.md): the fewest
dead models (one score for every image) plus constant predictors (one class at argmax) over both scenarios,
5 seeds and every level; ties broken by the highest mean val AUC over the same cells.

    python experiments/channel_criteria.py --jobs 2        # run (resumable: finished chains are kept)
    python experiments/channel_criteria.py --collect-only

Writes reports/channel_criteria.csv (one row per candidate, scenario, seed and round, val split) and
reports/channel_criteria.md (the table params.yaml and the README quote).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES: dict[str, dict] = {
    "l1_layerwise": {"criterion": "l1", "scope": "layerwise"},
    "l1_global": {"criterion": "l1", "scope": "global"},
    "l2_group_global": {"criterion": "l2_group", "scope": "global"},
    "refill_layerwise": {"criterion": "refill", "scope": "layerwise"},
    "refill_global": {"criterion": "refill", "scope": "global"},
}
SCENARIOS, SEEDS = ("red", "black"), (0, 1, 2, 3, 4)
WORK = Path(os.environ.get("CLASSPRUNE_CHANNEL_DIR", "/tmp/classprune-channel-criteria"))


def params_for(candidate: str | None):
    from classprune.config import Params

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["run"].update(scenarios=list(SCENARIOS), channel_scenarios=list(SCENARIOS), seeds=list(SEEDS))
    raw["baselines"]["methods"] = []
    raw["train"]["threads"] = 1
    raw["prune"]["channel"].update(CANDIDATES[candidate] if candidate else {})
    return Params.model_validate(raw)


def workdir(name: str, source: Path) -> Path:
    """A folder whose data/cache and W0 features are the source checkout's (links), models its own."""
    d = WORK / name
    (d / "models" / "pretrained").mkdir(parents=True, exist_ok=True)
    for rel in ("data/cache", "models/pretrained/features.pt"):
        link = d / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to((source / rel).resolve())
    return d


def evaluate_val(params, scenario: str, seed: int) -> list[dict]:
    """Every round of the chain on val only, scored by its compact network (whose logits equal the masked
    network's, tests/test_channels.py) with the evaluate stage's metric code."""
    from classprune import io
    from classprune.lottery import runner as lottery
    from classprune.lottery.channels import compact, macs_and_params
    from classprune.evaluation.diagnose import score_constant
    from classprune.lottery.masks import load_mask, remaining
    from classprune.evaluation.metrics import binary_metrics, predict

    rows, val = [], lottery.train_loader(params, "val", train=False)
    for r in params.prune.rounds:
        cur = lottery.round_paths(params, scenario, seed, r.k, "channel")
        mask = load_mask(cur.mask)
        full = lottery.build(params, seed, io.load_torch(cur.weights))
        small = compact(full, mask, lottery.channel_units(params, full), params.data.image_size)
        labels, scores, argmax = predict(small, val, desc="val")
        m = binary_metrics(labels, scores, argmax)
        macs, n = macs_and_params(small, params.data.image_size)
        rows.append({"round": r.k, "remaining": remaining(mask), "macs": macs, "params": n, "val_auc": m["auc"],
                     "val_fnr": m["fnr"], "val_fpr": m["fpr"], "constant": bool(m["constant"]),
                     "score_constant": bool(score_constant(scores))})
    return rows


def run_unit(scenario: str, seed: int, source: Path) -> str:
    """The dense round once, then every candidate's later rounds and their val scores, in this process."""
    from classprune.lottery import runner as lottery
    from classprune.device import set_threads
    from classprune.paths import chain

    set_threads(1)
    folder = Path("models") / chain(scenario, "channel") / f"seed_{seed}"
    dense = workdir("dense", source)
    os.chdir(dense)
    base = params_for(None)
    if not (folder / "round_1" / "weights.pt").is_file():  # the dense round, shared (the weight chain's, as lt_ch)
        lottery.init(base, scenario, seed)
        lottery.train_round(base, scenario, seed, 1)
        lottery.adopt_dense_rounds(base, scenario, seed)
    for name in CANDIDATES:
        d = workdir(name, source)
        os.chdir(d)
        out = d / "val" / f"{scenario}-seed{seed}.json"
        if out.is_file():
            continue
        params = params_for(name)
        for k in (0, 1):
            shutil.copytree(dense / folder / f"round_{k}", folder / f"round_{k}", dirs_exist_ok=True)
        for r in params.prune.rounds[1:]:
            if not (folder / f"round_{r.k}" / "weights.pt").is_file():  # resumable
                lottery.train_round(params, scenario, seed, r.k, "channel")
        rows = [{"candidate": name, "scenario": scenario, "seed": seed, **row}
                for row in evaluate_val(params, scenario, seed)]
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(rows))
    return f"{scenario} seed {seed}"


def collect() -> pd.DataFrame:
    return pd.DataFrame([row for name in CANDIDATES for path in sorted((WORK / name / "val").glob("*.json"))
                         for row in json.loads(path.read_text())])


def choose(df: pd.DataFrame) -> pd.DataFrame:
    """The rule: fewest dead + constant models, then the highest mean val AUC."""
    g = df.groupby("candidate")
    out = pd.DataFrame({"cells": g.size(), "dead": g["score_constant"].sum().astype(int),
                        "constant": g["constant"].sum().astype(int), "val_auc": g["val_auc"].mean()})
    out["failed"] = out["dead"] + out["constant"]  # a dead model counts twice: it is constant too
    return out.sort_values(["failed", "val_auc"], ascending=[True, False])


def table(df: pd.DataFrame) -> str:
    rounds = sorted(df["round"].unique())
    agg = df.groupby(["candidate", "scenario", "round"], sort=False).agg(
        auc=("val_auc", "mean"), auc_min=("val_auc", "min"), dead=("score_constant", "sum"),
        const=("constant", "sum"), remaining=("remaining", "mean"), macs=("macs", "mean")).reset_index()
    lines = ["Val split only, 5 seeds. Cell: mean val AUC over seeds (lowest seed), D = dead models (one score "
             "for every image), C = constant predictors at argmax (a dead model is constant too).", ""]
    dense_macs = float(agg.loc[agg["round"] == 1, "macs"].mean())
    head = "| criterion | scenario | " + " | ".join(f"round {k}" for k in rounds) + " |"
    rule = "|---|---|" + "---:|" * len(rounds)
    lines += [head, rule]
    for (cand, sc), g in agg.groupby(["candidate", "scenario"], sort=False):
        cells = {r.round: f"{r.auc:.3f} ({r.auc_min:.3f}) {int(r.dead)}D {int(r.const)}C" for r in g.itertuples()}
        lines.append(f"| {cand} | {sc} | " + " | ".join(cells.get(k, "") for k in rounds) + " |")
    lines += ["", "Mean share of the channel mask's weights remaining / MACs of the compact network (share of the "
              "dense network's), over both scenarios and the seeds:", "", head.replace("| scenario ", ""),
              rule.replace("|---|---|", "|---|")]
    for cand, g in agg.groupby("candidate", sort=False):
        by = g.groupby("round")[["remaining", "macs"]].mean()
        lines.append(f"| {cand} | " + " | ".join(f"{100 * by.loc[k, 'remaining']:.3g} % / "
                                                 f"{100 * by.loc[k, 'macs'] / dense_macs:.3g} %" for k in rounds) + " |")
    ranked = choose(df)
    lines += ["", "The rule, fixed before looking: fewest dead + constant models over both scenarios, 5 seeds and "
              "every level, then the highest mean val AUC:", "",
              "| criterion | dead | constant | mean val AUC |", "|---|---:|---:|---:|"]
    lines += [f"| {c} | {int(r.dead)} | {int(r.constant)} | {r.val_auc:.4f} |" for c, r in ranked.iterrows()]
    lines += ["", f"Chosen: {ranked.index[0]}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--source", type=Path, default=ROOT, help="checkout whose data/cache and W0 features to use")
    ap.add_argument("--collect-only", action="store_true")
    args = ap.parse_args(argv)
    if not args.collect_only:
        for rel in ("data/cache", "models/pretrained/features.pt"):
            if not (args.source / rel).exists():
                print(f"error: {args.source / rel} not found: `dvc repro cache pretrain` first", file=sys.stderr)
                return 2
        units = [(sc, s) for s in SEEDS for sc in SCENARIOS]
        with ProcessPoolExecutor(args.jobs) as pool:
            for done in pool.map(run_unit, *zip(*units), [args.source.resolve()] * len(units)):
                print("done", done, file=sys.stderr, flush=True)
    df = collect()
    df.sort_values(["candidate", "scenario", "seed", "round"]).to_csv(ROOT / "reports" / "channel_criteria.csv",
                                                                      index=False)
    (ROOT / "reports" / "channel_criteria.md").write_text(table(df))
    print(table(df))
    return 0


if __name__ == "__main__":
    sys.exit(main())
