"""Collect per-round metrics into the versioned reports: DVC metrics, plot CSVs, Fig. 4/5 figures, summary."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from . import io
from .config import Params
from .diagnose import CONV
from .metrics import METRIC_KEYS
from .summary import summary_markdown

REPORTS = Path("reports")
SPLITS = ("test", "val")


OP_KEYS = ("fnr", "fpr", "accuracy", "balanced_accuracy")  # at the val-chosen operating point
MEAN_KEYS = (*METRIC_KEYS, "balanced_accuracy", *(f"op_{k}" for k in OP_KEYS))


def diagnosis_columns(rd: dict) -> dict:
    """The evaluate stage's diagnosis on val (classprune.diagnose), flat; empty for models without one."""
    d = rd.get("diagnosis")
    if not d:
        return {"score_constant": False, "cause": None}
    kept = d.get("w0_kept") or {}
    return {"score_constant": bool(d["score_constant"]), "cause": d["cause"],
            **{f"dead_{k}": v for k, v in d["dead"].items()},
            **{f"w0_kept_{c}": kept.get(c) for c in CONV},
            "w0_kept_conv": (sum(kept[c] for c in CONV) / len(CONV)) if all(c in kept for c in CONV) else None}


def load_results(params: Params, root: str | Path = ".") -> pd.DataFrame:
    """One row per (method, seed, round, split) from exactly the result files the current params declare.

    A file from another configuration (a scenario, round or method no longer in params.yaml) is never
    read; a declared file that is missing is an error naming it.
    """
    from .errors import DataError
    from .paths import declared_results

    rows, wanted_rounds = [], {r.k for r in params.prune.rounds}
    for rel in declared_results(params):
        path = Path(root) / rel
        if not path.is_file():
            raise DataError(f"{rel} not found: run `dvc repro` (the evaluate and baseline stages write it; a seed "
                            "new to run.seeds needs `classprune seeds` first)")
        r = json.loads(path.read_text())
        for rd in r["rounds"]:
            if rd["round"] not in wanted_rounds:
                continue
            for split in SPLITS:
                m, op = rd[split], rd[split].get("op", {})
                rows.append({"method": r["method"], "kind": r["kind"], "seed": r["seed"], "round": rd["round"],
                             "remaining": rd["remaining"], "remaining_all": rd.get("remaining_all", rd["remaining"]),
                             "nonzero": rd.get("nonzero"), "split": split, **diagnosis_columns(rd),
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
    agg = g[["remaining", "remaining_all", *MEAN_KEYS]].mean()
    for m in MEAN_KEYS:
        agg[f"{m}_ci95"] = g[m].agg(ci95)
    agg["n_seeds"] = g["seed"].nunique()
    agg["n_constant"] = g["constant"].sum().astype(int)
    agg["n_dead"] = g["score_constant"].sum().astype(int)
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
        entry = {k: _clean(getattr(r, k)) for k in (*METRIC_KEYS, "remaining", "remaining_all", "op_fnr", "op_fpr")}
        entry["n_constant"] = int(r.n_constant)
        entry["n_dead"] = int(r.n_dead)
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
        levels = g.groupby("round").agg(remaining=("remaining", "mean"), remaining_all=("remaining_all", "mean"),
                                        fnr=("fnr", "mean"),
                                        constant=("constant", "any")).sort_values("remaining", ascending=False)
        dense = levels.iloc[0]
        if dense["constant"] or math.isnan(dense["fnr"]):
            out[method] = None
            continue
        ok = levels[(~levels["constant"]) & (levels["fnr"] <= dense["fnr"] + margin)]
        if ok.empty:
            out[method] = None
            continue
        best = ok["remaining"].idxmin()
        out[method] = {"round": int(best), "remaining": float(ok.loc[best, "remaining"]),
                       "remaining_all": float(ok.loc[best, "remaining_all"]), "val_fnr": float(ok.loc[best, "fnr"]),
                       "dense_val_fnr": float(dense["fnr"])}
    return out


def selection(params: Params, df: pd.DataFrame, budget: dict[str, dict | None]) -> dict[str, dict | None]:
    """The model to ship per scenario: the FN-budget level of the first seed, with its val threshold."""
    from .paths import round_paths

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
        out[method] = {"seed": seed, "round": b["round"], "remaining": b["remaining"],
                       "remaining_all": b["remaining_all"], "weights": str(rp.weights),
                       "mask": str(rp.mask), "threshold": prob, "threshold_logodds": logodds,
                       "threshold_rule": f"val FNR <= {params.evaluate.target_fnr}" if logodds is not None else "argmax"}
    return out


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
    cols = ["method", "kind", "round", "remaining", "remaining_all", *MEAN_KEYS, *(f"{m}_ci95" for m in MEAN_KEYS),
            "n_seeds", "n_constant", "n_dead"]
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
    from .curves import confusion_markdown, write_curves

    write_curves(params, budget, out / "roc", out / "figures")
    io.write_text(out / "summary.md", summary_markdown(params, df, agg, diffs, budget, chosen, params.report.split, extra)
                  + "\n" + confusion_markdown(params, chosen, params.report.split))
    return agg


def shortcut_line() -> dict:
    """The darkest-pixel AUC on the test split: how far a one-number darkness shortcut gets (target <= 0.75)."""
    from .data.cache import load_split
    from .data.synthetic import darkest_pixel_auc
    from .paths import CACHE

    test = load_split(CACHE, "test")
    return {"Darkest-pixel shortcut": f"test AUC {darkest_pixel_auc(test.images, test.labels):.3f} of the "
            "score -min(grey) alone, beside the models' below (a task it solves would measure darkness, "
            "not crack shape; target <= 0.75)"}


def report(params: Params) -> None:
    """The report stage: every report file, then the summary table of ``report.split`` on stdout."""
    agg = write_reports(params, extra=shortcut_line())
    sub = agg[agg["split"] == params.report.split]
    cols = ["method", "round", "remaining", "auc", "accuracy", "fnr", "fpr"]
    print(sub[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
