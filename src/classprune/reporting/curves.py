"""ROC and precision-recall curves of the shipped seed's models, and the confusion matrix at the shipped threshold.

Four summary numbers do not show where a threshold could go; the curves do. Per method and split (val and
test apart), three levels: the dense model (round 1), the FN-budget level (scenarios: the level the report
ships) and the lowest level, all of the first seed (the seed the export ships), from the scores the
evaluate and baseline stages keep (reports/scores/). Written as tables for `dvc plots` and as one figure
per split beside the Fig. 4/5 figure.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import io
from ..paths import scores_path

SPLITS = ("val", "test")
LEVELS = ("dense", "FN budget", "lowest")
CURVES = Path("reports/roc")


def _scores(method: str, seed: int) -> dict[str, np.ndarray] | None:
    path = scores_path(method, seed)
    if not path.is_file():
        return None
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def curve_levels(params, budget: dict) -> dict[str, dict[str, int]]:
    """method -> level name -> round, for every method of the run (baselines: dense and lowest only)."""
    rounds = [r.k for r in params.prune.rounds]
    out = {}
    for method in [*params.run.scenarios, *params.baselines.methods]:
        levels = {"dense": rounds[0], "lowest": rounds[-1]}
        if budget.get(method):
            levels["FN budget"] = budget[method]["round"]
        out[method] = levels
    return out


def curve_tables(params, budget: dict) -> dict[str, pd.DataFrame]:
    """``roc_<split>`` (fpr, tpr) and ``pr_<split>`` (recall, precision) rows per method, level and round."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    seed, rows = params.run.seeds[0], {f"{c}_{s}": [] for c in ("roc", "pr") for s in SPLITS}
    for method, levels in curve_levels(params, budget).items():
        z = _scores(method, seed)
        if z is None:
            continue
        for level, k in levels.items():
            for split in SPLITS:
                labels, key = z.get(f"{split}_labels"), f"{split}_round_{k}"
                if labels is None or key not in z or len(np.unique(labels)) < 2:
                    continue  # a baseline without that level (MobileNet: one point), or a one-class split
                fpr, tpr, _ = roc_curve(labels, z[key])
                precision, recall, _ = precision_recall_curve(labels, z[key])
                tag = {"method": method, "level": level, "round": k}
                rows[f"roc_{split}"] += [{**tag, "fpr": a, "tpr": b} for a, b in zip(fpr, tpr)]
                rows[f"pr_{split}"] += [{**tag, "recall": a, "precision": b} for a, b in zip(recall, precision)]
    return {name: pd.DataFrame(r) for name, r in rows.items()}


def write_curves(params, budget: dict, out: Path = CURVES, figures: Path = Path("reports/figures")) -> None:
    tables = curve_tables(params, budget)
    for name, df in tables.items():
        io.write_text(out / f"{name}.csv", df.to_csv(index=False, float_format="%.6g"))
    for split in SPLITS:
        plot_curves(tables[f"roc_{split}"], tables[f"pr_{split}"], split, figures / f"roc_pr_{split}.png")


def plot_curves(roc: pd.DataFrame, pr: pd.DataFrame, split: str, path: Path) -> None:
    """2 x 3 panels: ROC (top) and precision-recall (bottom) at the dense, FN-budget and lowest level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 9.5))
    methods = sorted(set(roc.get("method", [])) | set(pr.get("method", [])), key=str)
    colors = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    for col, level in enumerate(LEVELS):
        for row, (df, x, y) in enumerate(((roc, "fpr", "tpr"), (pr, "recall", "precision"))):
            ax = axes[row, col]
            sub = df[df["level"] == level] if len(df) else df
            for method, g in (sub.groupby("method") if len(sub) else []):
                pct = f"round {int(g['round'].iloc[0])}"
                ax.plot(g[x], g[y], color=colors[method], lw=1.4, label=f"{method} ({pct})",
                        drawstyle="steps-post" if x == "fpr" else "steps-pre")
            if x == "fpr":
                ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
            ax.set(xlabel=x, ylabel=y, xlim=(0, 1), ylim=(0, 1.02),
                   title=f"{'ROC' if x == 'fpr' else 'precision-recall'}, {level}")
            if ax.has_data():
                ax.legend(fontsize=7, loc="lower right" if x == "fpr" else "lower left")
    fig.suptitle(f"{split} split, first seed (the shipped one)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, metadata={"Software": None})
    plt.close(fig)


def confusion_markdown(params, chosen: dict, split: str = "test") -> str:
    """The confusion matrix of each shipped model at its threshold (chosen on val) on ``split``."""
    from sklearn.metrics import confusion_matrix

    lines = [f"## Confusion matrix at the shipped threshold ({split} split)", "",
             "The model the FN budget ships (first seed), at its operating threshold chosen on val; rows: true "
             "class, columns: decision.", "",
             "| scenario | round | threshold (log-odds) | true pos -> pos | true pos -> neg (FN) "
             "| true neg -> pos (FP) | true neg -> neg |", "|---|---:|---:|---:|---:|---:|---:|"]
    for method, sel in chosen.items():
        z = _scores(method, sel["seed"]) if sel else None
        if sel is None or z is None or sel.get("threshold_logodds") is None:
            lines.append(f"| {method} | none | | | | | |")
            continue
        labels, scores = z[f"{split}_labels"], z[f"{split}_round_{sel['round']}"]
        tn, fp, fn, tp = confusion_matrix(labels, (scores >= sel["threshold_logodds"]).astype(int),
                                          labels=[0, 1]).ravel()
        lines.append(f"| {method} | {sel['round']} | {sel['threshold_logodds']:.3f} | {tp} | {fn} | {fp} | {tn} |")
    return "\n".join(lines) + "\n"
