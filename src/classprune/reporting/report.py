"""Collect per-round metrics into the versioned reports: DVC metrics, plot CSVs, Fig. 4/5 figures, summary."""
from __future__ import annotations

import json
import math
from collections.abc import Collection
from pathlib import Path

import pandas as pd

from .. import io
from ..config import Params
from ..evaluation.metrics import METRIC_KEYS
from .summary import channel_markdown, summary_markdown

REPORTS = Path("reports")
SPLITS = ("test", "val")


OP_KEYS = ("fnr", "fpr", "accuracy", "balanced_accuracy")  # at the val-chosen operating point
MEAN_KEYS = (*METRIC_KEYS, "balanced_accuracy", *(f"op_{k}" for k in OP_KEYS))
COST_KEYS = ("macs", "params", "macs_share")  # what a channel ticket's compact network costs; NaN otherwise


def diagnosis_columns(rd: dict, convs: Collection[str]) -> dict:
    """The evaluate stage's diagnosis on val (classprune.evaluation.diagnose), flat; empty for models without one.
    ``w0_kept_conv`` is the share of W0's magnitude kept, mean over the network's conv layers, ``_min`` the least."""
    d = rd.get("diagnosis")
    if not d:
        return {"score_constant": False, "cause": None}
    kept = [v for c, v in (d.get("w0_kept") or {}).items() if c in convs]
    return {"score_constant": bool(d["score_constant"]), "cause": d["cause"],
            **{f"dead_{k}": v for k, v in d["dead"].items()},
            "w0_kept_conv": sum(kept) / len(kept) if kept else None, "w0_kept_conv_min": min(kept) if kept else None}


def load_results(params: Params, root: str | Path = ".") -> pd.DataFrame:
    """One row per (method, seed, round, split) from exactly the result files the current params declare.

    A file from another configuration (a scenario, round or method no longer in params.yaml) is never
    read; a declared file that is missing is an error naming it.
    """
    from ..errors import DataError
    from ..models.network import conv_layers
    from ..paths import declared_results

    rows, wanted_rounds = [], {r.k for r in params.prune.rounds}
    convs = set(conv_layers(params.model.arch, params.model.head))
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
                             "nonzero": rd.get("nonzero"), "split": split, **diagnosis_columns(rd, convs),
                             "threshold": rd.get("threshold"),
                             **{k: m.get(k) for k in (*METRIC_KEYS, "balanced_accuracy", "tp", "fp", "tn", "fn")},
                             "constant": bool(m.get("constant", False)),
                             **{f"op_{k}": op.get(k) for k in OP_KEYS}, "macs": rd.get("macs"),
                             "params": rd.get("params")})
    df = pd.DataFrame(rows)
    df[[*MEAN_KEYS, "macs", "params"]] = df[[*MEAN_KEYS, "macs", "params"]].astype(float)
    return with_costs(df)


def with_costs(df: pd.DataFrame) -> pd.DataFrame:
    """MACs and parameters of every channel row: a reinit control runs its ticket's architecture (same seed
    and round), so it takes the ticket's counts; ``macs_share`` is of the dense network's MACs (the ticket's
    round 1). Weight-pruned models run at dense MACs whatever their zeros, so they stay NaN, not invented."""
    ticket = df["method"].str.removesuffix("-reinit")
    keys = ["method", "seed", "round", "split"]
    counts = df[df["kind"] == "channel"].set_index(keys)[["macs", "params"]]
    is_reinit = df["kind"] == "reinit"
    if is_reinit.any():
        at = pd.MultiIndex.from_frame(df.loc[is_reinit, keys].assign(method=ticket[is_reinit]))
        for c in ("macs", "params"):
            df.loc[is_reinit, c] = df.loc[is_reinit, c].fillna(
                pd.Series(counts[c].reindex(at).to_numpy(), index=df.index[is_reinit]))
    dense = counts.loc[counts.index.get_level_values("round") == 1, "macs"].groupby(level="method").mean()
    df["macs_share"] = (df["macs"] / ticket.map(dense).astype(float)).where(df["kind"].isin(["channel", "reinit"]))
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
    agg = g[["remaining", "remaining_all", *MEAN_KEYS, *COST_KEYS]].mean()
    for m in MEAN_KEYS:
        agg[f"{m}_ci95"] = g[m].agg(ci95)
    agg["n_seeds"] = g["seed"].nunique()
    agg["n_constant"] = g["constant"].sum().astype(int)
    agg["n_dead"] = g["score_constant"].sum().astype(int)
    return agg.reset_index().sort_values(["split", "method", "remaining"], ascending=[True, True, False])


def paired(df: pd.DataFrame, method: str, reference: str, split: str,
           keys: tuple[str, ...] = ("fnr", "auc"), extra: tuple[str, ...] = ()) -> list[dict]:
    """Per round of ``method``: mean of (method - reference) paired by seed and round, its 95 % CI, and
    whether the CI excludes 0. Seeds where either value is undefined are left out of that pair; ``extra``
    columns are carried as their mean over seeds."""
    sub = df[df["split"] == split]
    ref = sub[sub["method"] == reference].set_index(["seed", "round"])
    rows = []
    for k, g in sub[sub["method"] == method].groupby("round"):
        g = g.set_index(["seed", "round"])
        row = {"method": method, "round": k, "remaining": float(g["remaining"].mean()),
               **{c: float(g[c].mean()) for c in extra}}
        for key in keys:
            d = (g[key] - ref[key].reindex(g.index)).dropna()
            mean, half = float(d.mean()) if len(d) else float("nan"), ci95(d)
            row |= {f"d_{key}": mean, f"d_{key}_ci95": half, f"d_{key}_n": int(len(d)),
                    f"d_{key}_excludes_0": bool(not math.isnan(half) and abs(mean) > half)}
        rows.append(row)
    return rows


def paired_differences(df: pd.DataFrame, reference: str = "red", split: str = "test",
                       keys: tuple[str, ...] = ("fnr", "auc")) -> pd.DataFrame:
    """Per scenario (weight ticket) and round: (scenario - reference) paired by seed, see ``paired``."""
    sub = df[df["kind"] == "scenario"]
    methods = sorted(set(sub.loc[sub["split"] == split, "method"]) - {reference})
    return pd.DataFrame([row for m in methods for row in paired(sub, m, reference, split, keys)])


PAIRED_CHANNEL_COLUMNS = ("comparison", "method", "reference", "split", "round", "remaining", "macs_share",
                          *(f"d_{k}{s}" for k in ("fnr", "auc") for s in ("", "_ci95", "_n", "_excludes_0")))


def paired_channel(params: Params, df: pd.DataFrame) -> pd.DataFrame:
    """Channel tickets, paired by seed on val and test: each scenario's ticket against red's (when red has
    one), and each ticket against its random-reinit control (Liu et al. 2019: is the ticket more than its
    architecture?)."""
    from ..paths import chain, reinit_method

    scen, pairs = params.run.channel_scenarios, []
    if "red" in scen:
        pairs += [("vs red", chain(s, "channel"), chain("red", "channel")) for s in scen if s != "red"]
    pairs += [("vs reinit", chain(s, "channel"), reinit_method(s)) for s in scen]
    rows = [{"comparison": c, "reference": ref, "split": split, **row} for split in ("val", "test")
            for c, m, ref in pairs for row in paired(df, m, ref, split, extra=("macs_share",))]
    return pd.DataFrame(rows, columns=list(PAIRED_CHANNEL_COLUMNS))


def _clean(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 6)


def metrics_tree(agg: pd.DataFrame, split: str) -> dict:
    """{method: {round_k: {auc, accuracy, fnr, fpr, remaining, op_*[, *_ci95, n_seeds]}}} for ``dvc metrics diff``."""
    tree: dict = {}
    for r in agg[agg["split"] == split].itertuples(index=False):
        entry = {k: _clean(getattr(r, k)) for k in (*METRIC_KEYS, "remaining", "remaining_all", "op_fnr", "op_fpr")}
        if not math.isnan(r.macs):
            entry |= {k: _clean(getattr(r, k)) for k in COST_KEYS}
        entry["n_constant"] = int(r.n_constant)
        entry["n_dead"] = int(r.n_dead)
        if r.n_seeds > 1:
            entry.update({f"{k}_ci95": _clean(getattr(r, f"{k}_ci95")) for k in (*METRIC_KEYS, "op_fnr", "op_fpr")})
            entry["n_seeds"] = int(r.n_seeds)
        tree.setdefault(r.method, {})[f"round_{r.round}"] = entry
    return tree


def fn_budget(df: pd.DataFrame, margin: float, kind: str = "scenario") -> dict[str, dict | None]:
    """Per method of ``kind`` ("scenario": weight tickets, "channel": channel tickets), chosen on VAL: the
    smallest level whose mean val FNR is within ``margin`` of the dense (round 1) mean val FNR, among levels
    where no seed's model is constant on val.

    None when the dense model is constant on val for some seed (its FNR says nothing) or no level
    qualifies. Every round's network is a deployable candidate, so a worse round in between does not
    disqualify a smaller one.
    """
    out: dict[str, dict | None] = {}
    val = df[(df["split"] == "val") & (df["kind"] == kind)]
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


def selection(params: Params, df: pd.DataFrame, budget: dict[str, dict | None],
              granularity: str = "weight") -> dict[str, dict | None]:
    """The model to ship per scenario: the FN-budget level of the first seed, with its val threshold. A
    channel ticket's entry also names its chain and what its compact network costs (MACs, parameters)."""
    from ..paths import chain, round_paths

    seed, out = params.run.seeds[0], {}
    names = {chain(s, granularity): s for s in params.run.channel_scenarios} if granularity != "weight" else {}
    for method, b in budget.items():
        scenario = names.get(method, method)
        if b is None:
            out[scenario] = None
            continue
        rp = round_paths(params, scenario, seed, b["round"], granularity)
        row = df[(df["method"] == method) & (df["seed"] == seed) & (df["round"] == b["round"]) & (df["split"] == "val")]
        logodds = row["threshold"].iloc[0] if len(row) else None
        logodds = None if logodds is None or pd.isna(logodds) else float(logodds)
        # the export applies it to softmax(logits)[:, 1] = sigmoid(log-odds); without val positives: argmax
        prob = 0.5 if logodds is None else 1.0 / (1.0 + math.exp(-max(min(logodds, 700.0), -700.0)))
        out[scenario] = {"seed": seed, "round": b["round"], "remaining": b["remaining"],
                         "remaining_all": b["remaining_all"], "weights": str(rp.weights),
                         "mask": str(rp.mask), "threshold": prob, "threshold_logodds": logodds,
                         "threshold_rule": f"val FNR <= {params.evaluate.target_fnr}" if logodds is not None else "argmax"}
        if granularity != "weight":
            cost = {c: row[c].iloc[0] if len(row) else float("nan") for c in ("macs", "params")}
            out[scenario] |= {"granularity": granularity, "chain": method,
                              **{c: None if pd.isna(v) else int(v) for c, v in cost.items()}}
    return out


def write_reports(params: Params, root: Path = Path("."), out: Path = REPORTS, extra: dict | None = None) -> pd.DataFrame:
    from .figures import majority_accuracy, plot_figure, plot_frontier

    df = load_results(params, root)
    agg = aggregate(df)
    diffs = paired_differences(df, "red", params.report.split) if "red" in params.run.scenarios else pd.DataFrame()
    budget = fn_budget(df, params.report.fn_margin)
    chosen = selection(params, df, budget)
    ch_budget = fn_budget(df, params.report.fn_margin, "channel")
    ch_chosen, ch_diffs = selection(params, df, ch_budget, "channel"), paired_channel(params, df)
    io.write_json(out / "metrics.json", metrics_tree(agg, "test"))
    io.write_json(out / "metrics_val.json", metrics_tree(agg, "val"))
    io.write_json(out / "selection.json", chosen)
    io.write_json(out / "selection_channel.json", ch_chosen)
    io.write_text(out / "paired_channel.csv", ch_diffs.to_csv(index=False))
    cols = ["method", "kind", "round", "remaining", "remaining_all", *MEAN_KEYS, *(f"{m}_ci95" for m in MEAN_KEYS),
            "n_seeds", "n_constant", "n_dead"]
    for split in SPLITS:
        for method, g in agg[agg["split"] == split].groupby("method"):
            costs = list(COST_KEYS) if g["kind"].isin(["channel", "reinit"]).any() else []
            io.write_text(out / "curves" / split / f"{method}.csv", g[cols + costs].to_csv(index=False))
        plot_figure(agg, split, params, out / "figures" / f"{split}.png",
                    majority_accuracy=majority_accuracy(df, split))
    if agg["kind"].isin(["channel", "reinit"]).any():
        plot_frontier(agg, params, out / "figures" / "frontier_macs.png")
    with io.atomic_path(out / "rounds.csv") as tmp:  # cost columns only where a channel ticket has them
        df.drop(columns=[c for c in COST_KEYS if df[c].isna().all()]).sort_values(
            ["method", "seed", "round", "split"]).to_csv(tmp, index=False)
    if len(diffs):
        with io.atomic_path(out / "paired_differences.csv") as tmp:
            diffs.to_csv(tmp, index=False)
    from .curves import confusion_markdown, write_curves

    write_curves(params, budget, out / "roc", out / "figures")
    io.write_text(out / "summary.md", summary_markdown(params, df, agg, diffs, budget, chosen, params.report.split, extra)
                  + channel_markdown(params, agg, ch_diffs, ch_budget, ch_chosen, params.report.split)
                  + "\n" + confusion_markdown(params, chosen, params.report.split))
    return agg


def shortcut_line() -> dict:
    """The darkest-pixel AUC on the test split: how far a one-number darkness shortcut gets (target <= 0.75)."""
    from ..data.cache import load_split
    from ..data.synthetic import darkest_pixel_auc
    from ..paths import CACHE

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
