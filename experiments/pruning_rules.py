"""Choose the default pruning rule on the validation split: the lottery-ticket literature's rules side by side.

Each rule runs the real pipeline (`dvc repro` of every seed's evaluate stages: init, every LT round and the evaluation of red and
black over 5 seeds) in its own copy of this checkout, sharing this checkout's DVC cache, so the data and W0
are the ones `make repro` uses. Only val numbers are collected: the test split never enters the choice.

    python experiments/pruning_rules.py --jobs 2            # run (resumable: DVC skips what is done)
    python experiments/pruning_rules.py --collect-only      # rebuild the table from the copies
    python experiments/pruning_rules.py --profile mobilenet_v2 --rules open_lth frankle_carbin

Writes reports/pruning_rules.csv (one row per rule, scenario, seed and round, val split) and
reports/pruning_rules.md (the table params.yaml and the README quote); with --profile NAME, params.yaml with
that profile's overlay is the base (its network and seeds) and the files go to reports/archs/NAME/.
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

from classprune.reporting.report import diagnosis_columns

ROOT = Path(__file__).resolve().parents[1]
COMMON = {"run.scenarios": ["red", "black"], "baselines.methods": []}   # seeds: the base params' (default 0-4)
WEIGHTS_ONLY = {"prune.include_biases": False}
RULES: dict[str, dict] = {
    # rahimentezari/Sensys-ml2020: every tensor on its own, biases and the output layer included
    "authors": {"prune.criterion": "magnitude_increase", "prune.scope": "layerwise", "prune.include_biases": True,
                "prune.ignore": []},
    # facebookresearch/open_lth: |W|, one global threshold, weights only, the output layer left whole
    "open_lth": {"prune.criterion": "magnitude", "prune.scope": "global", **WEIGHTS_ONLY,
                 "prune.ignore": ["output"]},
    # Frankle & Carbin 2019: |W| per layer, weights only, the output layer at half the rate
    "frankle_carbin": {"prune.criterion": "magnitude", "prune.scope": "layerwise", **WEIGHTS_ONLY,
                       "prune.ignore": [], "prune.layer_rates": {"output": 0.25}},
    # the authors' rule with rounds 4x as long, so the weights move further before they are scored; red only,
    # 3 seeds, rounds to 25 % (where the 200-step rounds had killed 3 of 5 red seeds) to fit the CPU time
    "authors_800": {"prune.criterion": "magnitude_increase", "prune.scope": "layerwise", "prune.include_biases": True,
                    "prune.ignore": [],
                    "train.iterations": 800, "run.scenarios": ["red"], "run.seeds": [0, 1, 2],
                    "prune.rounds": [{"k": k, "prev": k - 1} for k in range(1, 4)]},
}
COPIES = Path(os.environ.get("CLASSPRUNE_RULES_DIR", "/tmp/classprune-rules"))
PROFILE: str | None = None   # --profile: its overlay on params.yaml is the base of every rule


def set_key(tree: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        tree = tree.setdefault(p, {})
    tree[leaf] = value


def make_copy(name: str) -> Path:
    """This checkout's tracked and untracked files (not its outputs, not its reports), params overridden, cache shared."""
    dest = COPIES / name
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        if rel.startswith("reports/"):   # the checkout's own results: only what the copy evaluates may be collected
            continue
        src, dst = ROOT / rel, dest / rel
        if src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists() or dst.read_bytes() != src.read_bytes():
                shutil.copy2(src, dst)
    if not (dest / ".git").exists():
        subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
        # DVCLive (the train logs) reads HEAD: a repository without a commit stops every training stage
        subprocess.run(["git", "-c", "user.name=classprune", "-c", "user.email=classprune@localhost", "commit", "-q",
                        "--allow-empty", "-m", "pruning-rules copy"], cwd=dest, check=True)
    params = base_params()
    for key, value in settings(name).items():
        set_key(params, key, value)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["dvc", "cache", "dir", "--local", str(ROOT / ".dvc" / "cache")], cwd=dest, check=True)
    return dest


def base_params() -> dict:
    from classprune import profiles

    if PROFILE is None:
        return yaml.safe_load((ROOT / "params.yaml").read_text())
    return profiles.merged_params(PROFILE, base=ROOT / "params.yaml")


def settings(name: str) -> dict:
    """The keys a rule's copy sets: the base's seeds, the common ones, the rule's own (which may override both)."""
    return {"run.seeds": base_params()["run"]["seeds"], **COMMON, **RULES[name]}


def run(name: str) -> int:
    dest = make_copy(name)
    env = {**os.environ, "PYTHONPATH": str(dest / "src"), "CLASSPRUNE_THREADS": "1"}
    log = (COPIES / f"{name}.log").open("a")
    subprocess.run(["dvc", "checkout", "prepare", "split", "cache", "pretrain"], cwd=dest, env=env,
                   stdout=log, stderr=subprocess.STDOUT)
    targets = [f"pipelines/seed_{s}/dvc.yaml:evaluate" for s in settings(name)["run.seeds"]]
    return subprocess.run(["dvc", "repro", *targets], cwd=dest, env=env, stdout=log,
                          stderr=subprocess.STDOUT).returncode


def collect(names: list[str]) -> pd.DataFrame:
    from classprune.models.network import conv_layers

    model = base_params()["model"]
    convs = conv_layers(model["arch"], tuple(model["head"]))
    rows = []
    for name in names:
        cfg = settings(name)
        for seed in cfg["run.seeds"]:
            for scenario in cfg["run.scenarios"]:
                path = COPIES / name / "reports" / "rounds" / f"seed_{seed}" / f"{scenario}.json"
                if path.is_file():
                    rows += _rows(name, json.loads(path.read_text()), convs)
    return pd.DataFrame(rows)


def _rows(name: str, r: dict, convs: list[str]) -> list[dict]:
    """One row per round of one result file of the copy's evaluate stage."""
    rows = []
    for rd in r["rounds"]:
        val = rd["val"]
        rows.append({"rule": name, "scenario": r["method"], "seed": r["seed"], "round": rd["round"],
                     "remaining": rd["remaining"], "remaining_all": rd.get("remaining_all"),
                     "val_auc": val["auc"], "val_fnr": val["fnr"], "val_fpr": val["fpr"],
                     "constant": val["constant"], **diagnosis_columns(rd, convs)})
    return rows


def _grid(agg: pd.DataFrame, cell) -> list[str]:
    """One row per rule and scenario, one column per round (labelled by its nominal remaining level)."""
    rounds = sorted(agg["round"].unique())
    lines = ["| rule | scenario | " + " | ".join(f"{100 * 0.5 ** (k - 1):g} %" for k in rounds) + " |",
             "|---|---|" + "---:|" * len(rounds)]
    for (rule, sc), g in agg.groupby(["rule", "scenario"], sort=False):
        cells = {r.round: cell(r) for r in g.itertuples()}
        lines.append(f"| {rule} | {sc} | " + " | ".join(cells.get(k, "") for k in rounds) + " |")
    return lines


def table(df: pd.DataFrame) -> str:
    """Per rule, scenario and round: mean / min val AUC over seeds, dead and constant models, why they died."""
    from classprune.models.registry import get

    model = base_params()["model"]
    width, head = get(model["arch"]).width, model["head"]
    df = df.assign(dead_head=df["dead_head1"] + df["dead_head2"])
    agg = df.groupby(["rule", "scenario", "round"], sort=False).agg(
        seeds=("seed", "nunique"), auc=("val_auc", "mean"), auc_min=("val_auc", "min"), dead=("score_constant", "sum"),
        const=("constant", "sum"), kept=("w0_kept_conv", "mean"), features=("dead_features", "mean"),
        head=("dead_head", "mean")).reset_index()
    out = ["Val split only. Cell: mean val AUC over seeds (lowest seed), D = dead models (one score for every "
           "image, AUC 0.500), C = constant predictors at argmax (one class for every image). Levels are nominal: "
           "the share of the prunable weights.", ""]
    out += _grid(agg, lambda r: f"{r.auc:.3f} ({r.auc_min:.3f}) {int(r.dead)}D {int(r.const)}C")
    out += ["", "Share of W0's conv-feature magnitude (sum of |W0|) the mask keeps, mean over the conv layers and "
            "the seeds. A criterion blind to the pretrained magnitudes keeps about the share of weights it keeps:", ""]
    out += _grid(agg, lambda r: f"{r.kept:.3f}")
    out += ["", f"Never-firing units on val, mean over seeds: pooled conv features (of {width}) / head ReLU units "
            f"(of {sum(head)}):", ""]
    out += _grid(agg, lambda r: f"{r.features:.0f} / {r.head:.1f}")
    dead = df[df["score_constant"].astype(bool)]
    causes = dead.groupby(["rule", "scenario", "cause"]).size()
    out += ["", "Causes of the dead models (first that applies in the forward pass; classprune.evaluation.diagnose): "
            + ("; ".join(f"{rule} {sc}: {n} {cause}" for (rule, sc, cause), n in causes.items()) or "none") + "."]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", nargs="*", default=list(RULES), choices=list(RULES))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--collect-only", action="store_true")
    ap.add_argument("--profile", help="a profile (profiles/NAME.yaml) whose overlay on params.yaml is the base")
    args = ap.parse_args(argv)
    global COPIES, PROFILE
    PROFILE = args.profile
    if PROFILE:
        COPIES = COPIES / PROFILE
    out = ROOT / "reports" / ("archs/" + PROFILE if PROFILE else "")
    COPIES.mkdir(parents=True, exist_ok=True)
    if not args.collect_only:
        with ThreadPoolExecutor(args.jobs) as pool:
            codes = dict(zip(args.rules, pool.map(run, args.rules)))
        print(codes, file=sys.stderr)
    df = collect(args.rules)
    out.mkdir(parents=True, exist_ok=True)
    df.sort_values(["rule", "scenario", "seed", "round"]).to_csv(out / "pruning_rules.csv", index=False)
    (out / "pruning_rules.md").write_text(table(df))
    print(table(df))
    return 0


if __name__ == "__main__":
    sys.exit(main())
