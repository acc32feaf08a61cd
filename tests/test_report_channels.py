"""The report learns channel tickets: MACs and parameters per row (a reinit control takes its ticket's), the
FN budget of the channel tickets chosen on val (selection_channel.json), paired differences by seed against
red's channel ticket and against the random-reinit control (paired_channel.csv), the summary's section and
the MACs frontier; without channel scenarios every one of them is empty and summary.md is as before."""
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from scipy import stats

from classprune.config import load_params
from classprune.profiles import merged_params
from classprune.reporting.report import (PAIRED_CHANNEL_COLUMNS, aggregate, fn_budget, load_results, paired_channel,
                               write_reports)

ROOT = Path(__file__).parents[1]
DENSE_MACS = 40_000_000


def split_metrics(fnr, auc=0.9, constant=False):
    tp, fn = (0, 10) if constant else (10 - round(10 * fnr), round(10 * fnr))
    return {"accuracy": 0.9, "auc": auc, "fnr": fnr, "fpr": 0.0 if constant else 0.1, "balanced_accuracy": 0.8,
            "tp": tp, "fp": 0 if constant else 1, "tn": 40 if constant else 39, "fn": fn, "constant": constant,
            "op": {"fnr": 0.05, "fpr": 0.2, "accuracy": 0.8, "balanced_accuracy": 0.875}}


def chain(method, seed, fnrs, val_fnrs=None, kind="scenario", aucs=None, constant_val=()):
    """One result file as evaluate_chain / reinit_channel write it; channel rounds carry their cost."""
    val_fnrs, aucs = val_fnrs or fnrs, aucs or [0.9] * len(fnrs)
    rounds = []
    for k, (t, v, a) in enumerate(zip(fnrs, val_fnrs, aucs), start=1):
        rd = {"round": k, "remaining": 0.5 ** (k - 1), "nonzero": 100, "threshold": -0.5,
              "test": split_metrics(t, a), "val": split_metrics(v, a, constant=k in constant_val)}
        if kind in ("channel", "reinit"):
            rd["granularity"] = "channel"
        if kind == "channel":   # the compact network shrinks each round (seed-dependent params, as a check)
            rd |= {"macs": DENSE_MACS // 2 ** (k - 1), "params": 1000 * (10 - k) + seed}
        rounds.append(rd)
    return {"method": method, "kind": kind, "seed": seed, "rounds": rounds}


def write(root, records):
    for r in records:
        path = root / "reports" / "rounds" / f"seed_{r['seed']}" / f"{r['method']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(r))


def make_params(tmp_path, scenarios=("red", "black"), channel=("black",), seeds=(0, 1, 2), rounds=3):
    raw = merged_params("tiny", ROOT / "params.yaml", ROOT / "profiles")
    raw["run"] = {"scenarios": list(scenarios), "seeds": list(seeds), "channel_scenarios": list(channel)}
    raw["baselines"]["methods"] = []
    raw["prune"]["rounds"] = [{"k": k, "prev": k - 1} for k in range(1, rounds + 1)]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_params(path)


def study(tmp_path, seeds=(0, 1, 2), reds=(0.2, 0.6, 0.9), ticket_val=(0.1, 0.3, 0.11), constant_val=()):
    """red and black weight chains; black's and red's channel tickets and their controls. The black ticket's
    FNR is red's minus 0.1 for every seed; the control's is the ticket's plus 0.2 for every seed."""
    params = make_params(tmp_path, channel=("red", "black"), seeds=seeds)
    recs = []
    for s, f in zip(seeds, reds):
        recs += [chain("red", s, [f] * 3), chain("black", s, [f - 0.1] * 3),
                 chain("red-channel", s, [f] * 3, kind="channel"),
                 chain("black-channel", s, [f - 0.1] * 3, list(ticket_val), kind="channel",
                       constant_val=constant_val if s == seeds[0] else ()),
                 chain("red-channel-reinit", s, [f] * 3, kind="reinit"),
                 chain("black-channel-reinit", s, [f + 0.1] * 3, kind="reinit", aucs=[0.8 + 0.01 * s] * 3)]
    write(tmp_path, recs)
    return params


def test_reinit_rows_take_the_tickets_costs_and_weight_rows_stay_nan(tmp_path):
    params = study(tmp_path)
    df = load_results(params, tmp_path)
    ctrl = df[(df["method"] == "black-channel-reinit") & (df["seed"] == 1) & (df["round"] == 2)]
    assert list(ctrl["macs"]) == [DENSE_MACS / 2] * 2 and list(ctrl["params"]) == [8001.0] * 2
    assert df.loc[df["kind"] == "scenario", ["macs", "params", "macs_share"]].isna().all().all()
    agg = aggregate(df)
    row = agg[(agg["split"] == "test") & (agg["method"] == "black-channel") & (agg["round"] == 3)].iloc[0]
    assert row["macs_share"] == pytest.approx(0.25) and row["params"] == pytest.approx(7001.0)
    assert agg.loc[agg["kind"] == "scenario", "macs_share"].isna().all()


def test_channel_fn_budget_chooses_on_val_and_skips_constant_levels(tmp_path):
    # val: round 3 is within 0.02 of the dense 0.1, round 2 is not; test (all equal) must not matter
    params = study(tmp_path)
    df = load_results(params, tmp_path)
    assert fn_budget(df, 0.02, "channel")["black-channel"]["round"] == 3
    assert set(fn_budget(df, 0.02)) == {"red", "black"}, "the weight budget never sees channel chains"
    # round 3 constant on val for one seed: not eligible; round 2 is within the margin now
    params = study(tmp_path, ticket_val=(0.1, 0.11, 0.1), constant_val=(3,))
    assert fn_budget(load_results(params, tmp_path), 0.02, "channel")["black-channel"]["round"] == 2
    # the dense ticket constant on val for a seed: no budget at all
    params = study(tmp_path, constant_val=(1,))
    assert fn_budget(load_results(params, tmp_path), 0.02, "channel")["black-channel"] is None


def test_selection_channel_names_the_chain_checkpoint_threshold_and_cost(tmp_path):
    params = study(tmp_path)
    out = tmp_path / "out"
    write_reports(params, tmp_path, out)
    sel = json.loads((out / "selection_channel.json").read_text())
    assert set(sel) == {"red", "black"}
    b = sel["black"]
    assert b["chain"] == "black-channel" and b["granularity"] == "channel" and b["seed"] == 0 and b["round"] == 3
    assert b["weights"] == "models/black-channel/seed_0/round_3/weights.pt"
    assert b["mask"] == "models/black-channel/seed_0/round_3/mask.pt"
    assert b["macs"] == DENSE_MACS // 4 and b["params"] == 7000 and b["remaining"] == 0.25
    assert b["threshold_logodds"] == -0.5 and b["threshold"] == pytest.approx(1 / (1 + math.exp(0.5)))
    weight = json.loads((out / "selection.json").read_text())
    assert set(weight) == {"red", "black"} and "granularity" not in weight["black"]
    assert weight["black"]["weights"] == "models/black/seed_0/round_3/weights.pt"


def test_channel_pairs_are_paired_by_seed_on_val_and_test(tmp_path):
    params = study(tmp_path)
    d = paired_channel(params, load_results(params, tmp_path))
    assert list(d.columns) == list(PAIRED_CHANNEL_COLUMNS)
    assert set(d["split"]) == {"val", "test"}
    test = d[d["split"] == "test"].set_index(["comparison", "method", "round"])
    # red varies 0.2 .. 0.9 between seeds; black's ticket is always 0.1 below it: only pairing sees that
    vs_red = test.loc[("vs red", "black-channel", 2)]
    assert vs_red["reference"] == "red-channel" and vs_red["d_fnr"] == pytest.approx(-0.1)
    assert vs_red["d_fnr_ci95"] == pytest.approx(0.0, abs=1e-9) and vs_red["d_fnr_excludes_0"]
    assert vs_red["macs_share"] == pytest.approx(0.5) and vs_red["d_fnr_n"] == 3
    # the ticket against its control: FNR 0.2 lower every seed (excludes 0); AUC 0.1 higher give or take 0.01
    ctrl = test.loc[("vs reinit", "black-channel", 1)]
    assert ctrl["reference"] == "black-channel-reinit" and ctrl["d_fnr"] == pytest.approx(-0.2)
    assert ctrl["d_fnr_excludes_0"] and ctrl["d_auc"] == pytest.approx(0.09) and ctrl["d_auc_excludes_0"]
    half = stats.t.ppf(0.975, 2) * pd.Series([0.1, 0.09, 0.08]).std(ddof=1) / math.sqrt(3)
    assert ctrl["d_auc_ci95"] == pytest.approx(half)
    # red's ticket against red's control: no difference, so nothing excludes 0
    same = test.loc[("vs reinit", "red-channel", 1)]
    assert same["d_fnr"] == pytest.approx(0.0) and not same["d_fnr_excludes_0"]
    assert ("vs red", "red-channel", 1) not in test.index


def test_a_noisy_ticket_vs_control_difference_is_not_a_result(tmp_path):
    params = study(tmp_path)
    write(tmp_path, [chain("black-channel-reinit", s, [f] * 3, kind="reinit")
                     for s, f in zip((0, 1, 2), (0.0, 0.7, 0.6))])
    d = paired_channel(params, load_results(params, tmp_path))
    row = d[(d["split"] == "test") & (d["comparison"] == "vs reinit") & (d["method"] == "black-channel")].iloc[0]
    diffs = pd.Series([0.1 - 0.0, 0.5 - 0.7, 0.8 - 0.6])
    assert row["d_fnr"] == pytest.approx(diffs.mean())
    assert row["d_fnr_ci95"] == pytest.approx(stats.t.ppf(0.975, 2) * diffs.std(ddof=1) / math.sqrt(3))
    assert not row["d_fnr_excludes_0"]


def test_without_red_there_is_no_black_vs_red_pair(tmp_path):
    params = make_params(tmp_path, channel=("black",), seeds=(0, 1))
    write(tmp_path, [c for s in (0, 1) for c in (chain("red", s, [0.2] * 3), chain("black", s, [0.1] * 3),
                                                chain("black-channel", s, [0.1] * 3, kind="channel"),
                                                chain("black-channel-reinit", s, [0.3] * 3, kind="reinit"))])
    d = paired_channel(params, load_results(params, tmp_path))
    assert set(d["comparison"]) == {"vs reinit"} and len(d) == 6


def test_channel_reports_summary_and_frontier(tmp_path):
    params = study(tmp_path)
    out = tmp_path / "out"
    write_reports(params, tmp_path, out)
    summary = (out / "summary.md").read_text()
    part = summary.split("## Channel tickets")[1].split("## Confusion matrix")[0]
    assert "| black-channel | 50.00 | 50.00 | 8,001 | 0.900 ± 0.000 |" in part
    assert "| vs reinit | black-channel | black-channel-reinit | test | 100.00 | 100.00 | **-0.200 ± 0.000** |" in part
    assert "| black | 25.00 | 25.00 |" in part and "`models/black-channel/seed_0/round_3/weights.pt`" in part
    assert (out / "figures" / "frontier_macs.png").read_bytes()[:4] == b"\x89PNG"
    csv = pd.read_csv(out / "paired_channel.csv")
    assert len(csv) == 2 * 3 * 3          # (black vs red, 2 controls) x 3 rounds x 2 splits
    assert "macs_share" in pd.read_csv(out / "curves" / "test" / "black-channel.csv")
    assert "macs_share" not in pd.read_csv(out / "curves" / "test" / "black.csv")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["black-channel"]["round_2"]["macs"] == DENSE_MACS / 2 and "macs" not in metrics["black"]["round_1"]


def test_without_channel_scenarios_the_channel_outputs_are_empty(tmp_path):
    params = make_params(tmp_path, channel=(), seeds=(0, 1))
    write(tmp_path, [c for s in (0, 1) for c in (chain("red", s, [0.2, 0.3, 0.4]), chain("black", s, [0.1] * 3))])
    out = tmp_path / "out"
    write_reports(params, tmp_path, out)
    assert (out / "selection_channel.json").read_text() == "{}\n"
    assert (out / "paired_channel.csv").read_text() == ",".join(PAIRED_CHANNEL_COLUMNS) + "\n"
    assert "Channel tickets" not in (out / "summary.md").read_text()
    assert not (out / "figures" / "frontier_macs.png").exists()
    assert not {"macs", "params", "macs_share"} & set(pd.read_csv(out / "rounds.csv").columns)
