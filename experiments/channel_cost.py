"""What the channel tickets add to `make repro`, from measured stage durations (reports/recompute_stage_times.csv).

The CSV holds every stage's duration from the flow runs that computed the committed default (2 workers on the
2-core Intel Xeon VM): parts 1 and 2 are the full recompute (part 1 shared the cores with a test run, so its
durations are scaled by the ratio of the ``lt`` means of parts 2 and 1), part 3 the channel stages rerun after
issue 29's cut (one stage per channel chain, its dense round copied from the weight chain; the control on
the pruned levels only). Per kind of stage (the name before ``@``): the mean duration of its runs times its
count (distinct stage names); a channel kind that part 3 ran takes part 3's runs, every other kind those of
parts 1 and 2. The channel kinds are
``lt_ch``, ``eval_ch``, ``reinit``, ``export_ch`` (and ``init_ch`` before the cut); every other kind is the
rest of `make repro`. Stage-time, not wall-clock: two `make repro` runs side by side were not measured.

    python experiments/channel_cost.py            # prints the table and the ratio
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

CSV = Path("reports/recompute_stage_times.csv")
CHANNEL = {"init_ch", "lt_ch", "eval_ch", "reinit", "export_ch"}


def per_kind(df: pd.DataFrame) -> pd.DataFrame:
    """Count, mean seconds and stage-minutes per kind (and the scale applied to part 1)."""
    df = df.assign(kind=df["stage"].str.split("@").str[0], part=df["part"].str[0].astype(int))
    lt = df[df["kind"] == "lt"].groupby("part")["seconds"].mean()
    scale = {1: lt[2] / lt[1]} if {1, 2} <= set(lt.index) else {}
    df["seconds"] = df["seconds"] * df["part"].map(scale).fillna(1.0)
    rows = []
    for kind, g in df.groupby("kind"):
        last = g[g["part"] == 3] if kind in CHANNEL and (g["part"] == 3).any() else g[g["part"] <= 2]
        rows.append({"kind": kind, "channel": kind in CHANNEL, "part": int(last["part"].max()),
                     "count": last["stage"].nunique(), "mean_s": last["seconds"].mean()})
    out = pd.DataFrame(rows)
    out["minutes"] = out["count"] * out["mean_s"] / 60
    return out.sort_values(["channel", "minutes"], ascending=[True, False]).reset_index(drop=True), scale


def main(path: Path = CSV) -> int:
    if not path.is_file():
        print(f"error: {path} not found", file=sys.stderr)
        return 2
    df = pd.read_csv(path)
    for label, runs in (("before the cut (parts 1-2)", df[df["part"].str[0].astype(int) <= 2]), ("now", df)):
        table, scale = per_kind(runs)
        if label == "now" and (table["part"] == 3).any():
            table = table[~((table["kind"] == "init_ch") & (table["part"] < 3))]  # a stage that no longer exists
        rest, channel = table.loc[~table["channel"], "minutes"].sum(), table.loc[table["channel"], "minutes"].sum()
        print(f"## {label}\n{table.round(1).to_string(index=False)}")
        print(f"rest of make repro: {rest:.1f} stage-min; channel stages: {channel:.1f} stage-min, "
              f"+{100 * channel / rest:.1f} % ({int(table['count'].sum())} stages; part 1 scaled by "
              f"{scale.get(1, 1.0):.2f})\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
