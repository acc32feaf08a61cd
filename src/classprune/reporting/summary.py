"""summary.md: the report a reviewer reads, as markdown tables from the report's frames."""
from __future__ import annotations

import math

import pandas as pd

from ..config import Params
from ..evaluation.diagnose import CAUSES
from ..paths import chain, reinit_method


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
             "`dead units` is the mean count of never-firing units of the pooled features / the two head layers. "
             "`W0 kept` is the share of W0's |weight| the mask keeps, mean over the network's conv layers "
             "(min layer); a criterion blind to the pretrained magnitudes keeps about the remaining share.", "",
             "| method | remaining % | dead | causes | dead units (features / head1 / head2) | W0 conv magnitude kept (min layer) |",
             "|---|---:|---:|---|---|---:|"]
    for (method, _k), g in val.groupby(["method", "round"], sort=True):
        causes = ", ".join(f"{c} {n}" for c, n in g["cause"].value_counts().items() if c != CAUSES[-1]) or "-"
        kept = g["w0_kept_conv"].astype(float)
        low = g["w0_kept_conv_min"].astype(float)
        units = " / ".join(f"{g[f'dead_{u}'].astype(float).mean():.1f}" for u in ("features", "head1", "head2"))
        lines.append(f"| {method} | {g['remaining'].mean() * 100:.2f} | {int(g['score_constant'].sum())}/{len(g)} | "
                     f"{causes} | {units} | {_fmt(kept.mean())} ({_fmt(low.min())}) |")
    return lines


def _pct(v) -> str:
    return _fmt(v * 100, 2) if v is not None else "n/a"


def _bold_pm(r, key: str) -> str:
    text = _pm(getattr(r, f"d_{key}"), getattr(r, f"d_{key}_ci95"))
    return f"**{text}**" if getattr(r, f"d_{key}_excludes_0") else text


def channel_markdown(params: Params, agg: pd.DataFrame, paired: pd.DataFrame, budget: dict, chosen: dict,
                     split: str) -> str:
    """The channel tickets beside their random-reinit controls: what they cost (MACs, parameters), what they
    score, the paired differences and the FN budget; empty without channel scenarios (summary.md as before)."""
    scen = params.run.channel_scenarios
    if not scen:
        return ""
    sub = agg[agg["split"] == split].set_index(["method", "round"])
    lines = ["", f"## Channel tickets ({split} split)", "",
             "Whole conv output channels pruned and the network rebuilt smaller (`prune.channel`). `MACs %`: "
             "multiply-accumulates of one image through the compact network, of the dense network's (the "
             "ticket's round 1); `params`: its parameter count (both Torch-Pruning's counts, mean over seeds). "
             "`reinit`: the control, the same compact architecture from a fresh random init trained the same "
             "way (Liu et al. 2019); a ticket that does not beat it is its architecture, not its initialisation. "
             "Pruned levels only (n/a at the dense round: no architecture the pruning found).",
             "", "| method | remaining % | MACs % | params | AUC | FNR | FPR | const | reinit AUC | reinit FNR "
             "| reinit const |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in scen:
        if chain(s, "channel") not in sub.index.get_level_values("method"):
            continue
        ticket = sub.loc[chain(s, "channel")].sort_values("remaining", ascending=False)
        for k, r in ticket.iterrows():
            c = sub.loc[(reinit_method(s), k)] if (reinit_method(s), k) in sub.index else None
            ctrl = ["n/a"] * 3 if c is None else [_pm(c["auc"], c["auc_ci95"]), _pm(c["fnr"], c["fnr_ci95"]),
                                                   f"{int(c['n_constant'])}/{int(c['n_seeds'])}"]
            size = "n/a" if math.isnan(r["params"]) else f"{r['params']:,.0f}"
            lines.append(f"| {chain(s, 'channel')} | {r['remaining'] * 100:.2f} | {_pct(r['macs_share'])} | {size} | "
                         f"{_pm(r['auc'], r['auc_ci95'])} | {_pm(r['fnr'], r['fnr_ci95'])} | "
                         f"{_pm(r['fpr'], r['fpr_ci95'])} | {int(r['n_constant'])}/{int(r['n_seeds'])} | "
                         + " | ".join(ctrl) + " |")
    if len(paired):
        lines += ["", "### Paired differences of the channel tickets (paired by seed)", "",
                  "Mean of (method - reference) with its 95 % CI, on val and test; **bold** where the CI excludes "
                  "0. `vs red`: against red's channel ticket at the same round; `vs reinit`: the ticket against "
                  "its random-reinit control (negative ΔFNR, positive ΔAUC: the ticket's initialisation helps).",
                  "", "| comparison | method | reference | split | remaining % | MACs % | ΔFNR | ΔAUC |",
                  "|---|---|---|---|---:|---:|---:|---:|"]
        for r in paired.itertuples(index=False):
            lines.append(f"| {r.comparison} | {r.method} | {r.reference} | {r.split} | {r.remaining * 100:.2f} | "
                         f"{_pct(r.macs_share)} | {_bold_pm(r, 'fnr')} | {_bold_pm(r, 'auc')} |")
    test = agg[agg["split"] == "test"].set_index(["method", "round"])
    lines += ["", f"### FN budget of the channel tickets, chosen on val: smallest level whose mean val FNR is within "
              f"{params.report.fn_margin} of the dense val FNR, no seed constant on val", "",
              f"Test metrics of the chosen level (mean ± CI over seeds); the checkpoint is seed {params.run.seeds[0]}'s.",
              "", "| scenario | remaining % | MACs % | val FNR (dense) | test AUC | test FNR | test FPR | checkpoint |",
              "|---|---:|---:|---:|---:|---:|---:|---|"]
    for s in scen:
        b = budget.get(chain(s, "channel"))
        if b is None:
            lines.append(f"| {s} | none | | | | | | |")
            continue
        r = test.loc[(chain(s, "channel"), b["round"])]
        lines.append(f"| {s} | {b['remaining'] * 100:.2f} | {_pct(r['macs_share'])} | {_fmt(b['val_fnr'])} "
                     f"({_fmt(b['dense_val_fnr'])}) | {_pm(r['auc'], r['auc_ci95'])} | {_pm(r['fnr'], r['fnr_ci95'])} | "
                     f"{_pm(r['fpr'], r['fpr_ci95'])} | `{chosen[s]['weights']}` |")
    return "\n".join(lines) + "\n"
