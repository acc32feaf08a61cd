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
# Baselines are dashed, in colours none of the paper's scenarios use.
BASELINE_COLORS = {"snip": "tab:orange", "snip_trained": "tab:purple", "lobs": "tab:brown", "mobilenet": "tab:cyan"}


def load_rounds(rounds_dir: str | Path) -> pd.DataFrame:
    """One row per (method, seed, round, split) from the JSON files the evaluate stages write."""
    rows = []
    for path in sorted(Path(rounds_dir).rglob("*.json")):
        if any(part.startswith(".") for part in path.relative_to(rounds_dir).parts):
            continue  # temporaries of a writer that was killed before its atomic rename
        r = json.loads(path.read_text())
        for split in SPLITS:
            rows.append({"method": r["method"], "kind": r.get("kind", "scenario"), "seed": r["seed"],
                         "round": r["round"], "remaining": r["remaining"], "nonzero": r.get("nonzero"),
                         "split": split, **{k: r[split][k] for k in (*METRIC_KEYS, "tp", "fp", "tn", "fn")}})
    if not rows:
        raise FileNotFoundError(f"no round metrics under {rounds_dir}; run the evaluate stages first")
    df = pd.DataFrame(rows)
    df[list(METRIC_KEYS)] = df[list(METRIC_KEYS)].astype(float)
    return df


def _ci95(x: pd.Series) -> float:
    """Half-width of the 95 % t confidence interval of the mean over seeds (NaN for one seed)."""
    from scipy import stats

    x = x.dropna()
    if len(x) < 2:
        return float("nan")
    return float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95 % CI over seeds per (split, method, round)."""
    keys = ["split", "method", "kind", "round"]
    g = df.groupby(keys, sort=True)
    agg = g[["remaining", *METRIC_KEYS]].mean()
    for m in METRIC_KEYS:
        agg[f"{m}_ci95"] = g[m].agg(_ci95)
    agg["n_seeds"] = g["seed"].nunique()
    return agg.reset_index().sort_values(["split", "method", "remaining"], ascending=[True, True, False])


def _clean(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 6)


def metrics_tree(agg: pd.DataFrame, split: str) -> dict:
    """{method: {round_k: {auc, accuracy, fnr, fpr, remaining[, *_ci95]}}} for ``dvc metrics diff``."""
    tree: dict = {}
    for r in agg[agg["split"] == split].itertuples(index=False):
        entry = {k: _clean(getattr(r, k)) for k in (*METRIC_KEYS, "remaining")}
        if r.n_seeds > 1:
            entry.update({f"{k}_ci95": _clean(getattr(r, f"{k}_ci95")) for k in METRIC_KEYS})
            entry["n_seeds"] = int(r.n_seeds)
        tree.setdefault(r.method, {})[f"round_{r.round}"] = entry
    return tree


def fn_budget(agg: pd.DataFrame, split: str, margin: float) -> dict[str, float | None]:
    """Smallest remaining-weight level whose FNR is within ``margin`` of the method's dense FNR (round 1).

    Every round's network is a deployable candidate, so a worse round in between does not disqualify a
    smaller network that is within budget. None when the dense FNR is undefined (no positives).
    """
    out = {}
    for method, g in agg[(agg["split"] == split) & (agg["kind"] == "scenario")].groupby("method"):
        g = g.sort_values("remaining", ascending=False)
        dense = g["fnr"].iloc[0]
        within = g[g["fnr"] <= dense + margin]
        out[method] = float(within["remaining"].min()) if len(within) and not math.isnan(dense) else None
    return out


def plot_figure(agg: pd.DataFrame, split: str, params: Params, path: Path) -> None:
    """The paper's Fig. 4/5 layout: AUC, accuracy, FNR, FPR against remaining weights, log x axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sub = agg[agg["split"] == split]
    fig, axes = plt.subplots(1, 4, figsize=(18, 5.2))
    titles = {"auc": "AUC-ROC", "accuracy": "Accuracy", "fnr": "FNR", "fpr": "FPR"}
    for ax, key in zip(axes, METRIC_KEYS):
        for method, g in sub.groupby("method", sort=False):
            g = g.sort_values("remaining", ascending=False)
            sc = params.scenarios.get(method)
            color = sc.color if sc else BASELINE_COLORS.get(method)
            style = ("-o" if sc else "--s") if len(g) > 1 else "*"
            label = f"{method}: {sc.label}" if sc and sc.label else method
            ax.plot(g["remaining"] * 100, g[key], style, color=color, label=label, markersize=4 if len(g) > 1 else 12)
            ci = g[f"{key}_ci95"]
            if ci.notna().any():
                ax.fill_between(g["remaining"] * 100, g[key] - ci, g[key] + ci, color=color, alpha=0.15)
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("remaining weights (%)")
        ax.set_title(titles[key])
        ax.grid(True, which="both", alpha=0.3)
    # one legend under the panels: inside a panel it hides curves
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=4, fontsize=9, frameon=False)
    fig.suptitle(f"{params.profile}: {split} split")
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp.with_suffix(".png"), dpi=110)
        tmp.with_suffix(".png").rename(tmp)
    plt.close(fig)


def _fmt(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def summary_markdown(agg: pd.DataFrame, split: str, margin: float) -> str:
    sub = agg[agg["split"] == split]
    lines = [f"# Summary ({split} split)", "",
             "| method | remaining % | AUC | accuracy | FNR | FPR |", "|---|---:|---:|---:|---:|---:|"]
    for r in sub.itertuples(index=False):
        lines.append(f"| {r.method} | {r.remaining * 100:.2f} | {_fmt(r.auc)} | {_fmt(r.accuracy)} | "
                     f"{_fmt(r.fnr)} | {_fmt(r.fpr)} |")
    # FPR and AUC at that level show when an FNR within budget only means "everything is positive".
    lines += ["", f"## FN budget: smallest remaining weights with FNR within {margin} of the dense FNR", "",
              "| scenario | smallest remaining % | FNR there | FPR there | AUC there |", "|---|---:|---:|---:|---:|"]
    for method, level in fn_budget(agg, split, margin).items():
        if level is None:
            lines.append(f"| {method} | none | | | |")
            continue
        r = sub[(sub["method"] == method) & (sub["remaining"] == level)].iloc[0]
        lines.append(f"| {method} | {level * 100:.2f} | {_fmt(r.fnr)} | {_fmt(r.fpr)} | {_fmt(r.auc)} |")
    return "\n".join(lines) + "\n"


def write_reports(params: Params, rounds_dir: Path | None = None, out: Path = REPORTS) -> pd.DataFrame:
    from .pipeline import ROUNDS

    df = load_rounds(ROUNDS if rounds_dir is None else rounds_dir)
    agg = aggregate(df)
    io.write_json(out / "metrics.json", metrics_tree(agg, "test"))
    io.write_json(out / "metrics_val.json", metrics_tree(agg, "val"))
    for split in SPLITS:
        for method, g in agg[agg["split"] == split].groupby("method"):
            cols = ["method", "kind", "round", "remaining", *METRIC_KEYS, *(f"{m}_ci95" for m in METRIC_KEYS), "n_seeds"]
            io.write_text(out / "curves" / split / f"{method}.csv", g[cols].to_csv(index=False))
        plot_figure(agg, split, params, out / "figures" / f"{split}.png")
    with io.atomic_path(out / "rounds.csv") as tmp:
        df.sort_values(["method", "seed", "round", "split"]).to_csv(tmp, index=False)
    io.write_text(out / "summary.md", summary_markdown(agg, params.report.split, params.report.fn_margin))
    return agg
