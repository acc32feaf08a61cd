"""Collect per-round metrics into the versioned reports: DVC metrics, plot CSVs, Fig. 4/5 figures, summary."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from . import io
from .config import Params
from .metrics import METRIC_KEYS

REPORTS = Path("reports")
SPLITS = ("test", "val")


OP_KEYS = ("fnr", "fpr", "accuracy", "balanced_accuracy")  # at the val-chosen operating point
MEAN_KEYS = (*METRIC_KEYS, "balanced_accuracy", *(f"op_{k}" for k in OP_KEYS))


def load_results(params: Params, root: str | Path = ".") -> pd.DataFrame:
    """One row per (method, seed, round, split) from exactly the result files the current params declare.

    A file from another configuration (a scenario, round or method no longer in params.yaml) is never
    read; a declared file that is missing is an error naming it.
    """
    from .errors import DataError
    from .pipeline import declared_results

    rows, wanted_rounds = [], {r.k for r in params.prune.rounds}
    for rel in declared_results(params):
        path = Path(root) / rel
        if not path.is_file():
            raise DataError(f"{rel} not found: run `dvc repro` (the evaluate and baseline stages write it)")
        r = json.loads(path.read_text())
        for rd in r["rounds"]:
            if rd["round"] not in wanted_rounds:
                continue
            for split in SPLITS:
                m, op = rd[split], rd[split].get("op", {})
                rows.append({"method": r["method"], "kind": r["kind"], "seed": r["seed"], "round": rd["round"],
                             "remaining": rd["remaining"], "nonzero": rd.get("nonzero"), "split": split,
                             "threshold": rd.get("threshold"),
                             **{k: m.get(k) for k in (*METRIC_KEYS, "balanced_accuracy", "tp", "fp", "tn", "fn")},
                             "constant": bool(m.get("constant", False)),
                             **{f"op_{k}": op.get(k) for k in OP_KEYS}})
    df = pd.DataFrame(rows)
    df[list(MEAN_KEYS)] = df[list(MEAN_KEYS)].astype(float)
    return df


def ci95(x: pd.Series) -> float:
    """Half-width of the 95 % t confidence interval of the mean over seeds (NaN for one seed)."""
    from scipy import stats

    x = x.dropna()
    if len(x) < 2:
        return float("nan")
    return float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95 % CI over seeds per (split, method, round), and how many seeds collapsed there."""
    keys = ["split", "method", "kind", "round"]
    g = df.groupby(keys, sort=True)
    agg = g[["remaining", *MEAN_KEYS]].mean()
    for m in MEAN_KEYS:
        agg[f"{m}_ci95"] = g[m].agg(ci95)
    agg["n_seeds"] = g["seed"].nunique()
    agg["n_constant"] = g["constant"].sum().astype(int)
    return agg.reset_index().sort_values(["split", "method", "remaining"], ascending=[True, True, False])


def paired_differences(df: pd.DataFrame, reference: str = "red", split: str = "test",
                       keys: tuple[str, ...] = ("fnr", "auc")) -> pd.DataFrame:
    """Per scenario and round: mean of (scenario - reference) paired by seed, its 95 % CI, and whether
    the CI excludes 0. Seeds where either value is undefined are left out of that pair."""
    sub = df[(df["split"] == split) & (df["kind"] == "scenario")]
    ref = sub[sub["method"] == reference].set_index(["seed", "round"])
    rows = []
    for (method, k), g in sub[sub["method"] != reference].groupby(["method", "round"]):
        g = g.set_index(["seed", "round"])
        row = {"method": method, "round": k, "remaining": float(g["remaining"].mean())}
        for key in keys:
            d = (g[key] - ref[key].reindex(g.index)).dropna()
            mean, half = float(d.mean()) if len(d) else float("nan"), ci95(d)
            row |= {f"d_{key}": mean, f"d_{key}_ci95": half, f"d_{key}_n": int(len(d)),
                    f"d_{key}_excludes_0": bool(not math.isnan(half) and abs(mean) > half)}
        rows.append(row)
    return pd.DataFrame(rows)


def _clean(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 6)


def metrics_tree(agg: pd.DataFrame, split: str) -> dict:
    """{method: {round_k: {auc, accuracy, fnr, fpr, remaining, op_*[, *_ci95, n_seeds]}}} for ``dvc metrics diff``."""
    tree: dict = {}
    for r in agg[agg["split"] == split].itertuples(index=False):
        entry = {k: _clean(getattr(r, k)) for k in (*METRIC_KEYS, "remaining", "op_fnr", "op_fpr")}
        entry["n_constant"] = int(r.n_constant)
        if r.n_seeds > 1:
            entry.update({f"{k}_ci95": _clean(getattr(r, f"{k}_ci95")) for k in (*METRIC_KEYS, "op_fnr", "op_fpr")})
            entry["n_seeds"] = int(r.n_seeds)
        tree.setdefault(r.method, {})[f"round_{r.round}"] = entry
    return tree


def fn_budget(df: pd.DataFrame, margin: float) -> dict[str, dict | None]:
    """Per scenario, chosen on VAL: the smallest level whose mean val FNR is within ``margin`` of the dense
    (round 1) mean val FNR, among levels where no seed's model is constant on val.

    None when the dense model is constant on val for some seed (its FNR says nothing) or no level
    qualifies. Every round's network is a deployable candidate, so a worse round in between does not
    disqualify a smaller one.
    """
    out: dict[str, dict | None] = {}
    val = df[(df["split"] == "val") & (df["kind"] == "scenario")]
    for method, g in val.groupby("method"):
        levels = g.groupby("round").agg(remaining=("remaining", "mean"), fnr=("fnr", "mean"),
                                        constant=("constant", "any")).sort_values("remaining", ascending=False)
        dense = levels.iloc[0]
        if dense["constant"] or math.isnan(dense["fnr"]):
            out[method] = None
            continue
        ok = levels[(~levels["constant"]) & (levels["fnr"] <= dense["fnr"] + margin)]
        out[method] = ({"round": int(ok["remaining"].idxmin()), "remaining": float(ok["remaining"].min()),
                        "val_fnr": float(ok.loc[ok["remaining"].idxmin(), "fnr"]), "dense_val_fnr": float(dense["fnr"])}
                       if len(ok) else None)
    return out


def selection(params: Params, df: pd.DataFrame, budget: dict[str, dict | None]) -> dict[str, dict | None]:
    """The model to ship per scenario: the FN-budget level of the first seed, with its val threshold."""
    from .pipeline import round_paths

    seed, out = params.run.seeds[0], {}
    for method, b in budget.items():
        if b is None:
            out[method] = None
            continue
        rp = round_paths(params, method, seed, b["round"])
        row = df[(df["method"] == method) & (df["seed"] == seed) & (df["round"] == b["round"]) & (df["split"] == "val")]
        logodds = row["threshold"].iloc[0] if len(row) else None
        logodds = None if logodds is None or pd.isna(logodds) else float(logodds)
        # the export applies it to softmax(logits)[:, 1] = sigmoid(log-odds); without val positives: argmax
        prob = 0.5 if logodds is None else 1.0 / (1.0 + math.exp(-max(min(logodds, 700.0), -700.0)))
        out[method] = {"seed": seed, "round": b["round"], "remaining": b["remaining"], "weights": str(rp.weights),
                       "mask": str(rp.mask), "threshold": prob, "threshold_logodds": logodds,
                       "threshold_rule": f"val FNR <= {params.evaluate.target_fnr}" if logodds is not None else "argmax"}
    return out


def _fmt(v, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _pm(mean, half) -> str:
    return _fmt(mean) if half is None or (isinstance(half, float) and math.isnan(half)) else f"{_fmt(mean)} ± {_fmt(half)}"


def summary_markdown(params: Params, df: pd.DataFrame, agg: pd.DataFrame, diffs: pd.DataFrame,
                     budget: dict, chosen: dict, split: str, extra: dict | None = None) -> str:
    """The report a reviewer reads: means ± 95 % CI over seeds, paired differences, collapses, FN budget."""
    sub = agg[agg["split"] == split]
    seeds = params.run.seeds
    lines = [f"# Summary ({split} split)", "",
             f"Profile `{params.profile}`, data `{params.data.source}`, {len(seeds)} seed(s) {seeds}, "
             f"{params.train.iterations} iterations per round. Values are means ± the half-width of the 95 % "
             "t confidence interval over seeds. `OP` columns: at the threshold chosen on val "
             f"(val FNR <= {params.evaluate.target_fnr}) and applied unchanged to {split}. `const`: seeds whose "
             "model predicts one class for every image (a collapse: its FNR or FPR is no achievement)."]
    for key, value in (extra or {}).items():
        lines += ["", f"{key}: {value}"]
    lines += ["", "| method | remaining % | AUC | accuracy | FNR | FPR | OP FNR | OP FPR | OP bal. acc. | const |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sub.itertuples(index=False):
        lines.append(f"| {r.method} | {r.remaining * 100:.2f} | {_pm(r.auc, r.auc_ci95)} | "
                     f"{_pm(r.accuracy, r.accuracy_ci95)} | {_pm(r.fnr, r.fnr_ci95)} | {_pm(r.fpr, r.fpr_ci95)} | "
                     f"{_pm(r.op_fnr, r.op_fnr_ci95)} | {_pm(r.op_fpr, r.op_fpr_ci95)} | "
                     f"{_pm(r.op_balanced_accuracy, r.op_balanced_accuracy_ci95)} | {r.n_constant}/{r.n_seeds} |")
    if len(diffs):
        lines += ["", f"## Paired differences against red ({split} split, paired by seed)", "",
                  "Mean of (scenario - red) with its 95 % CI; **bold** where the CI excludes 0 (a difference "
                  "beyond the seed-to-seed noise). Negative ΔFNR = fewer missed positives than red.", "",
                  "| scenario | remaining % | ΔFNR | ΔAUC |", "|---|---:|---:|---:|"]
        for r in diffs.sort_values(["method", "remaining"], ascending=[True, False]).itertuples(index=False):
            cells = []
            for key in ("fnr", "auc"):
                text = _pm(getattr(r, f"d_{key}"), getattr(r, f"d_{key}_ci95"))
                cells.append(f"**{text}**" if getattr(r, f"d_{key}_excludes_0") else text)
            lines.append(f"| {r.method} | {r.remaining * 100:.2f} | {cells[0]} | {cells[1]} |")
    test = df[df["split"] == split]
    lines += ["", f"## Collapses ({split} split)", "",
              "Constant predictors among all (seed, level) models of each method. `AUC 0.500`: those of them that "
              "rank no better than chance, so no threshold rescues them (a dead ticket); the other constant models "
              "still rank, and a threshold chosen on val (the `OP` columns) can use that.", "",
              "| method | constant | of | all-negative | all-positive | AUC 0.500 |", "|---|---:|---:|---:|---:|---:|"]
    for method, g in test.groupby("method"):
        neg = int(((g["tp"] + g["fp"]) == 0).sum())
        pos = int(((g["tn"] + g["fn"]) == 0).sum())
        dead = int((g["constant"] & (g["auc"] == 0.5)).sum())
        lines.append(f"| {method} | {int(g['constant'].sum())} | {len(g)} | {neg} | {pos} | {dead} |")
    lines += ["", f"## FN budget, chosen on val: smallest level whose mean val FNR is within "
              f"{params.report.fn_margin} of the dense val FNR, no seed constant on val", "",
              f"Test metrics of the chosen level (mean ± CI over seeds); the shipped checkpoint is seed {seeds[0]}'s.", "",
              "| scenario | remaining % | val FNR (dense) | test AUC | test FNR | test FPR | test OP FNR | test OP FPR | checkpoint |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for method, b in sorted(budget.items()):
        if b is None:
            lines.append(f"| {method} | none | | | | | | | |")
            continue
        r = agg[(agg["split"] == "test") & (agg["method"] == method) & (agg["round"] == b["round"])].iloc[0]
        lines.append(f"| {method} | {b['remaining'] * 100:.2f} | {_fmt(b['val_fnr'])} ({_fmt(b['dense_val_fnr'])}) | "
                     f"{_pm(r.auc, r.auc_ci95)} | {_pm(r.fnr, r.fnr_ci95)} | {_pm(r.fpr, r.fpr_ci95)} | "
                     f"{_pm(r.op_fnr, r.op_fnr_ci95)} | {_pm(r.op_fpr, r.op_fpr_ci95)} | `{chosen[method]['weights']}` |")
    return "\n".join(lines) + "\n"


def write_reports(params: Params, root: Path = Path("."), out: Path = REPORTS, extra: dict | None = None) -> pd.DataFrame:
    from .figures import majority_accuracy, plot_figure

    df = load_results(params, root)
    agg = aggregate(df)
    diffs = paired_differences(df, "red", params.report.split) if "red" in params.run.scenarios else pd.DataFrame()
    budget = fn_budget(df, params.report.fn_margin)
    chosen = selection(params, df, budget)
    io.write_json(out / "metrics.json", metrics_tree(agg, "test"))
    io.write_json(out / "metrics_val.json", metrics_tree(agg, "val"))
    io.write_json(out / "selection.json", chosen)
    cols = ["method", "kind", "round", "remaining", *MEAN_KEYS, *(f"{m}_ci95" for m in MEAN_KEYS), "n_seeds", "n_constant"]
    for split in SPLITS:
        for method, g in agg[agg["split"] == split].groupby("method"):
            io.write_text(out / "curves" / split / f"{method}.csv", g[cols].to_csv(index=False))
        plot_figure(agg, split, params, out / "figures" / f"{split}.png",
                    majority_accuracy=majority_accuracy(df, split))
    with io.atomic_path(out / "rounds.csv") as tmp:
        df.sort_values(["method", "seed", "round", "split"]).to_csv(tmp, index=False)
    if len(diffs):
        with io.atomic_path(out / "paired_differences.csv") as tmp:
            diffs.to_csv(tmp, index=False)
    io.write_text(out / "summary.md", summary_markdown(params, df, agg, diffs, budget, chosen, params.report.split, extra))
    return agg
