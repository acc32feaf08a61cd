"""summary.md: the report a reviewer reads, as markdown tables from the report's frames."""
from __future__ import annotations

import math

import pandas as pd

from .config import Params
from .diagnose import CAUSES, CONV


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
    lines += ["", "`remaining %`: kept share of the prunable weights (the paper's x axis); `of all %`: of all "
              "parameters, counting tensors never pruned (biases, ignored layers) as kept.", "",
              "| method | remaining % | of all % | AUC | accuracy | FNR | FPR | OP FNR | OP FPR | OP bal. acc. | const |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sub.itertuples(index=False):
        lines.append(f"| {r.method} | {r.remaining * 100:.2f} | {r.remaining_all * 100:.2f} | {_pm(r.auc, r.auc_ci95)} | "
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
              "still rank, and a threshold chosen on val (the `OP` columns) can use that. `dead`: one score for "
              "every val image; the cause columns say why (see *Why tickets die*).", "",
              "| method | constant | of | all-negative | all-positive | AUC 0.500 | dead | "
              + " | ".join(CAUSES[:-1]) + " |", "|---|---:|---:|---:|---:|---:|---:|" + "---:|" * (len(CAUSES) - 1)]
    for method, g in test.groupby("method"):
        neg = int(((g["tp"] + g["fp"]) == 0).sum())
        pos = int(((g["tn"] + g["fn"]) == 0).sum())
        dead = int((g["constant"] & (g["auc"] == 0.5)).sum())
        causes = [str(int((g["cause"] == c).sum())) if g["cause"].notna().any() else "n/a" for c in CAUSES[:-1]]
        lines.append(f"| {method} | {int(g['constant'].sum())} | {len(g)} | {neg} | {pos} | {dead} | "
                     f"{int(g['score_constant'].sum())} | " + " | ".join(causes) + " |")
    lines += why_tickets_die(df)
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


def why_tickets_die(df: pd.DataFrame) -> list[str]:
    """Per method and level, on val: dead models and their causes, dead head units and the share of W0's
    conv-feature magnitude the mask keeps (against the share of weights it keeps)."""
    val = df[(df["split"] == "val") & df["cause"].notna()]
    if val.empty:
        return []
    lines = ["", "## Why tickets die (val split)", "",
             "Per method and level over seeds: `dead` models give one score for every val image (AUC 0.500); "
             "`cause` counts the first cause that applies in the forward pass: *features lost* (every pooled "
             "conv feature is 0 for every image), *dead head* (every ReLU unit of a head layer is 0), *output cut* "
             "(live units, one score); *ranks, one class* are constant at argmax but still rank. "
             "`dead units` is the mean count of never-firing units of the 256 pooled features / the 8 + 8 head "
             "units. `W0 kept` is the share of W0's |weight| the mask keeps, mean of the 5 conv layers "
             "(min layer); a criterion blind to the pretrained magnitudes keeps about the remaining share.", "",
             "| method | remaining % | dead | causes | dead units (features / head1 / head2) | W0 conv magnitude kept (min layer) |",
             "|---|---:|---:|---|---|---:|"]
    for (method, _k), g in val.groupby(["method", "round"], sort=True):
        causes = ", ".join(f"{c} {n}" for c, n in g["cause"].value_counts().items() if c != CAUSES[-1]) or "-"
        kept = g["w0_kept_conv"].astype(float)
        low = g[[f"w0_kept_{c}" for c in CONV]].astype(float).min(axis=1)
        units = " / ".join(f"{g[f'dead_{u}'].astype(float).mean():.1f}" for u in ("features", "head1", "head2"))
        lines.append(f"| {method} | {g['remaining'].mean() * 100:.2f} | {int(g['score_constant'].sum())}/{len(g)} | "
                     f"{causes} | {units} | {_fmt(kept.mean())} ({_fmt(low.min())}) |")
    return lines
