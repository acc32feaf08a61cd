"""The paper's Fig. 4/5: AUC-ROC, accuracy, FNR and FPR against the remaining weights, one panel each.

Kept apart from report.py (which computes the numbers) because legibility is its own job: at FNR 1.0 the
plain lottery ticket and four baselines coincide, so series are spread slightly along x, drawn with
distinct markers and line styles, and the scenarios are drawn above the baselines.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from .. import io
from ..config import Params

PANELS = (("auc", "AUC-ROC"), ("accuracy", "Accuracy"), ("fnr", "FNR (false-negative rate)"),
          ("fpr", "FPR (false-positive rate)"))
# Baselines: colours no scenario uses, hollow markers, dashed lines.
BASELINE_STYLE = {
    "snip": ("tab:orange", "s", "SNIP (no retraining)"),
    "snip_trained": ("tab:purple", "D", "SNIP + training"),
    "lobs": ("tab:brown", "^", "L-OBS"),
    "mobilenet": ("tab:cyan", "*", None),   # label from its architecture
}
SCENARIO_MARKERS = ("o", "v", "P", "X", "h", "p")
ARCH_NAMES = {"mobilenet_v3_small": "MobileNetV3-small", "mobilenet_v3_large": "MobileNetV3-large",
              "mobilenet_v2": "MobileNetV2"}


def level_label(percent: float) -> str:
    """100, 50, 25, 12.5, 6.25, 3.1, 1.6: the pruning levels as a reader says them."""
    if percent >= 5:
        return f"{percent:.4g}"
    return f"{percent:.1f}" if percent >= 1 else f"{percent:.2g}"


def majority_accuracy(rounds: pd.DataFrame, split: str) -> float | None:
    """Accuracy of always predicting the majority class, from one evaluation's confusion counts
    (report.load_rounds' frame: tp, fp, tn, fn per row); None when the counts are missing."""
    rows = rounds[rounds["split"] == split]
    if rows.empty or not {"tp", "fp", "tn", "fn"} <= set(rows):
        return None
    r = rows.iloc[0]
    pos, neg = float(r["tp"] + r["fn"]), float(r["tn"] + r["fp"])
    return max(pos, neg) / (pos + neg) if pos + neg else None


def method_label(method: str, params: Params) -> str:
    sc = params.scenarios.get(method)
    if sc is not None:
        return f"{method}: {sc.label}" if sc.label else method
    if method == "mobilenet":
        arch = getattr(getattr(getattr(params, "baselines", None), "mobilenet", None), "arch", "mobilenet")
        return f"{ARCH_NAMES.get(arch, arch)} (other arch.)"
    return BASELINE_STYLE.get(method, (None, None, method))[2] or method


def run_title(agg: pd.DataFrame, split: str, params: Params) -> str:
    """What was run: profile, data, split, seeds, rounds x iterations, pruning."""
    d, t, p = params.data, params.train, params.prune
    seeds = list(params.run.seeds)
    n = int(agg["n_seeds"].max()) if "n_seeds" in agg and len(agg) else len(seeds)
    seed_txt = f"{n} seed{'s' if n != 1 else ''} ({', '.join(map(str, seeds))})" if n == len(seeds) else f"{n} seeds"
    init = {"imagenet": "ImageNet init", "none": "random init"}.get(params.model.pretrained, f"{params.model.pretrained} init")
    return (f"{params.profile} profile: {d.source} data, {d.image_size} px, {split} split, {seed_txt}\n"
            f"{p.n_rounds} rounds x {t.iterations} iterations (batch {t.batch_size}), prune {p.rate:.0%} of the "
            f"remaining weights per round ({p.scope}, {p.criterion}), {init}; mean of seeds with 95 % CI")


def _offsets(methods: list[str]) -> dict[str, float]:
    """A multiplicative x offset per series (at most 0.7 of the factor 2 between levels, marker-wide steps),
    so that equal values stay side by side instead of on top of each other."""
    n = len(methods)
    step = min(0.11, 0.7 / max(n - 1, 1))
    return {m: 2 ** (step * (i - (n - 1) / 2)) for i, m in enumerate(methods)}


def _fit(ax, lo: float, hi: float, floor: float | None = None, ceil: float | None = None, min_span: float = 0.1):
    span = max(hi - lo, min_span)
    pad = 0.06 * span
    lo, hi = lo - pad, hi + pad
    if floor is not None:
        lo = max(lo, floor)
    if ceil is not None:
        hi = min(hi, ceil)
    ax.set_ylim(lo, hi)


def plot_figure(agg: pd.DataFrame, split: str, params: Params, path: Path, *,
                majority_accuracy: float | None = None, fn_margin: float | None = None,
                title: str | None = None) -> None:
    """Write the 2x2 figure of ``agg`` (report.aggregate's frame) for one split as a PNG at ``path``.

    majority_accuracy: the accuracy of always predicting the majority class (a reference line);
    fn_margin: the FN budget's margin (default params.report.fn_margin), drawn as dense FNR + margin per
    scenario.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator

    margin = params.report.fn_margin if fn_margin is None else fn_margin
    sub = agg[agg["split"] == split]
    scen = [m for m in params.scenarios if m in set(sub["method"])]
    scen += sorted(set(sub.loc[sub["kind"] == "scenario", "method"]) - set(scen))
    base = [m for m in BASELINE_STYLE if m in set(sub["method"])]
    base += sorted(set(sub["method"]) - set(scen) - set(base))
    order = base + scen                       # drawn in this order: scenarios on top
    offsets = _offsets([m for m in order if (sub["method"] == m).sum() > 1])   # single points keep their x
    # x: the kept share of all parameters, so a layer left unpruned is not counted as sparse
    xcol = "remaining_all" if "remaining_all" in sub else "remaining"
    levels = sorted(set((sub.loc[sub["kind"] == "scenario", xcol] * 100).round(6)) or
                    set((sub[xcol] * 100).round(6)), reverse=True)

    fig, axes = plt.subplots(2, 2, figsize=(14, 9.5), sharex=True)
    handles: dict[str, object] = {}
    for ax, (key, name) in zip(axes.flat, PANELS):
        for z, method in enumerate(order):
            g = sub[sub["method"] == method].sort_values("remaining", ascending=False)
            if g.empty:
                continue
            x = g[xcol].to_numpy() * 100
            y = g[key].to_numpy(dtype=float)
            ci = g[f"{key}_ci95"].to_numpy(dtype=float) if f"{key}_ci95" in g else None
            is_scenario = method in scen
            if is_scenario:
                sc = params.scenarios.get(method)
                color = sc.color if sc else None
                marker, face, ls, lw, ms = SCENARIO_MARKERS[scen.index(method) % len(SCENARIO_MARKERS)], None, "-", 2.2, 6
                zorder = 10 + z
            else:
                color, marker, _ = BASELINE_STYLE.get(method, ("gray", "x", method))
                face, ls, lw, ms, zorder = "white", "--", 1.3, 7, 3 + z
            if len(g) == 1:                    # a single point (MobileNet): a big hollow marker, no offset
                ms, lw, ls = 15, 0, "none"
            else:
                x = x * offsets.get(method, 1.0)
            (line,) = ax.plot(x, y, linestyle=ls, linewidth=lw, marker=marker, markersize=ms, color=color,
                              markerfacecolor=face or color, markeredgewidth=1.5, zorder=zorder,
                              label=method_label(method, params))
            handles.setdefault(method, line)
            if ci is not None and len(g) > 1 and (~pd.isna(ci)).any():
                ax.fill_between(x, y - ci, y + ci, color=color, alpha=0.12 if is_scenario else 0.08,
                                linewidth=0, zorder=zorder - 0.5)
        _references(ax, key, sub, scen, params, margin, majority_accuracy, handles)
        _limits(ax, key, sub, majority_accuracy)
        ax.set_xscale("log")
        if levels:
            ax.set_xlim(levels[0] * 1.35, levels[-1] / 1.35)     # reversed: pruning goes to the right
        ax.xaxis.set_major_locator(FixedLocator(levels))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([level_label(v) for v in levels])
        ax.set_title(name)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelbottom=True)
    for ax in axes[1]:
        ax.set_xlabel("remaining weights (% of all parameters, log scale)")
    labels = {m: handles[m].get_label() for m in order if m in handles}
    refs = [k for k in handles if k.startswith("_ref")]
    fig.legend([handles[m] for m in scen + base if m in handles] + [handles[k] for k in refs],
               [labels[m] for m in scen + base if m in labels] + [handles[k].get_label() for k in refs],
               loc="lower center", ncol=3, fontsize=9.5, frameon=False)
    fig.suptitle(title or run_title(agg, split, params), fontsize=11)
    n_rows = math.ceil((len(labels) + len(refs)) / 3)
    fig.tight_layout(rect=(0, 0.03 * n_rows + 0.005, 1, 1))
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp.with_suffix(".png"), dpi=110)
        tmp.with_suffix(".png").rename(tmp)
    plt.close(fig)


def _references(ax, key, sub, scen, params, margin, majority_accuracy, handles) -> None:
    from matplotlib.lines import Line2D

    style = dict(color="0.35", linestyle=":", linewidth=1.4, zorder=1)
    if key == "auc":
        handles["_ref_auc"] = ax.axhline(0.5, **style, label="AUC 0.5: chance")
    elif key == "accuracy" and majority_accuracy is not None:
        handles["_ref_acc"] = ax.axhline(majority_accuracy, **{**style, "linestyle": "-."},
                                         label=f"accuracy of always predicting the majority class ({majority_accuracy:.3f})")
    elif key == "fnr":
        for method in scen:
            g = sub[sub["method"] == method].sort_values("remaining", ascending=False)
            dense = float(g["fnr"].iloc[0])
            if math.isnan(dense) or dense + margin > 1.0:
                continue                       # a budget above FNR 1 allows everything
            sc = params.scenarios.get(method)
            ax.axhline(dense + margin, color=sc.color if sc else "0.35", linestyle=(0, (1, 2)), linewidth=1.3,
                       alpha=0.8, zorder=2)
            handles.setdefault("_ref_fnr", Line2D([], [], color="0.35", linestyle=(0, (1, 2)), linewidth=1.3,
                                                  label=f"FN budget: dense FNR + {margin:g}, in the scenario's colour"))


def _limits(ax, key, sub, majority_accuracy) -> None:
    vals = sub[key].astype(float)
    ci = sub.get(f"{key}_ci95", pd.Series(0.0, index=sub.index)).fillna(0.0).astype(float)
    lo, hi = float((vals - ci).min()), float((vals + ci).max())
    if math.isnan(lo):
        return
    if key == "auc":
        _fit(ax, min(lo, 0.5), max(hi, 0.5), floor=-0.02, ceil=1.03)
    elif key == "accuracy":
        if majority_accuracy is not None:
            lo, hi = min(lo, majority_accuracy), max(hi, majority_accuracy)
        _fit(ax, lo, hi, floor=-0.02, ceil=1.03)
    else:                                      # rates: 0 stays in view, the top fits the data
        _fit(ax, 0.0, hi, floor=-0.05, ceil=1.05, min_span=0.05)


def plot_frontier(agg: pd.DataFrame, params: Params, path: Path, split: str = "test") -> None:
    """Test AUC and FNR against the MACs a channel ticket costs (share of the dense network's, log x), each
    ticket beside its random-reinit control, with 95 % CI bands over seeds; the dense weight tickets' round-1
    value is a horizontal reference per scenario (unstructured zeros run at dense MACs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    from ..paths import chain, reinit_method

    sub = agg[agg["split"] == split]
    series = [(s, m, ctrl) for s in params.run.channel_scenarios
              for m, ctrl in ((chain(s, "channel"), False), (reinit_method(s), True))]
    weight = sub[sub["kind"] == "scenario"]
    drawn = sub[sub["method"].isin([m for _, m, _ in series]) & sub["macs_share"].notna()]
    ticks: list[float] = []
    for v in sorted(drawn["macs_share"] * 100, reverse=True):   # the tickets' levels, none crowding the next
        if not ticks or v < ticks[-1] / 1.15:
            ticks.append(float(v))
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    for ax, (key, name) in zip(axes, (("auc", "AUC-ROC"), ("fnr", "FNR (false-negative rate)"))):
        for s, method, ctrl in series:
            g = sub[(sub["method"] == method) & sub["macs_share"].notna()].sort_values("macs_share", ascending=False)
            if g.empty:
                continue
            sc = params.scenarios.get(s)
            color = sc.color if sc else None
            x, y = g["macs_share"].to_numpy(dtype=float) * 100, g[key].to_numpy(dtype=float)
            ci = g[f"{key}_ci95"].to_numpy(dtype=float)
            ax.plot(x, y, linestyle="--" if ctrl else "-", marker="s" if ctrl else "o", color=color,
                    markerfacecolor="white" if ctrl else color, linewidth=1.4 if ctrl else 2.2, zorder=4 if ctrl else 6,
                    label=f"{method} (random reinit control)" if ctrl else f"{method}: channel ticket")
            if (~pd.isna(ci)).any():
                ax.fill_between(x, y - ci, y + ci, color=color, alpha=0.08 if ctrl else 0.15, linewidth=0)
        for method, g in weight.groupby("method", sort=False):
            dense = g.sort_values("remaining", ascending=False).iloc[0]
            sc = params.scenarios.get(method)
            ax.axhline(float(dense[key]), color=sc.color if sc else "0.35", linestyle=":", linewidth=1.2, alpha=0.8,
                       zorder=2, label=f"{method}: dense weight ticket (round {int(dense['round'])})")
        if key == "auc":
            ax.axhline(0.5, color="0.35", linestyle="-.", linewidth=1.0, zorder=1, label="AUC 0.5: chance")
        _limits(ax, key, pd.concat([drawn, weight[weight["round"] == weight["round"].min()]]), None)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: level_label(v)))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.invert_xaxis()                       # pruning goes to the right, as in the Fig. 4/5 figure
        ax.set_xlabel("MACs of one image (% of the dense network, log scale)")
        ax.set_title(f"{name}, {split} split")
        ax.grid(True, alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=9, frameon=False)
    fig.suptitle(f"{params.profile} profile: channel tickets against their MACs; mean of seeds with 95 % CI",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0.05 * math.ceil(len(labels) / 3) + 0.01, 1, 1))
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png", metadata={"Software": None})
    plt.close(fig)
