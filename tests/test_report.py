"""The versioned reports: seed means with 95 % CIs, paired differences, collapses, the FN budget chosen on
val, and exactly the result files the current params declare."""
import json
import math
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from classprune.config import load_params
from classprune.errors import DataError
from classprune.reporting.report import aggregate, fn_budget, load_results, paired_differences, write_reports

ROOT = Path(__file__).parents[1]


def _split(fnr, auc=0.9, constant=False):
    tp, fn = (0, 10) if constant else (10 - round(10 * fnr), round(10 * fnr))
    return {"accuracy": 0.9, "auc": auc, "fnr": fnr, "fpr": 0.0 if constant else 0.1, "balanced_accuracy": 0.8,
            "tp": tp, "fp": 0 if constant else 1, "tn": 40 if constant else 39, "fn": fn, "constant": constant,
            "op": {"fnr": 0.05, "fpr": 0.2, "accuracy": 0.8, "balanced_accuracy": 0.875}}


def _chain(method, seed, test_fnrs, val_fnrs=None, kind="scenario", auc=0.9, constant_val=()):
    val_fnrs = val_fnrs or test_fnrs
    return {"method": method, "kind": kind, "seed": seed,
            "rounds": [{"round": k, "remaining": 0.5 ** (k - 1), "nonzero": 100, "threshold": -0.5,
                        "test": _split(t, auc), "val": _split(v, auc, constant=k in constant_val)}
                       for k, (t, v) in enumerate(zip(test_fnrs, val_fnrs), start=1)]}


def _write(root, records):
    for r in records:
        path = root / "reports" / "rounds" / f"seed_{r['seed']}" / f"{r['method']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(r))


def _params(tmp_path, scenarios=("red", "black"), seeds=(0, 1, 2), methods=(), rounds=3):
    import yaml

    from classprune.profiles import merged_params
    raw = merged_params("tiny", ROOT / "params.yaml", ROOT / "profiles")
    raw["run"] = {"scenarios": list(scenarios), "seeds": list(seeds)}
    raw["baselines"]["methods"] = list(methods)
    raw["prune"]["rounds"] = [{"k": k, "prev": k - 1} for k in range(1, rounds + 1)]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_params(path)


def test_seeds_are_averaged_with_a_t_interval(tmp_path):
    params = _params(tmp_path, scenarios=("black",), seeds=(0, 1), rounds=1)
    _write(tmp_path, [_chain("black", 0, [0.1]), _chain("black", 1, [0.3])])
    agg = aggregate(load_results(params, tmp_path))
    row = agg[(agg["split"] == "test")].iloc[0]
    assert row["fnr"] == pytest.approx(0.2)
    half = stats.t.ppf(0.975, 1) * pd.Series([0.1, 0.3]).std(ddof=1) / math.sqrt(2)
    assert row["fnr_ci95"] == pytest.approx(half)
    assert row["n_seeds"] == 2


def test_paired_differences_are_paired_by_seed(tmp_path):
    params = _params(tmp_path, seeds=(0, 1, 2), rounds=1)
    # red varies a lot between seeds; black is always exactly 0.1 below it: unpaired CIs would overlap
    reds = [0.2, 0.6, 0.9]
    _write(tmp_path, [_chain("red", s, [f]) for s, f in enumerate(reds)]
           + [_chain("black", s, [f - 0.1]) for s, f in enumerate(reds)])
    d = paired_differences(load_results(params, tmp_path), "red", "test").iloc[0]
    assert d["method"] == "black" and d["d_fnr"] == pytest.approx(-0.1)
    assert d["d_fnr_ci95"] == pytest.approx(0.0, abs=1e-9) and d["d_fnr_excludes_0"]
    assert d["d_auc"] == pytest.approx(0.0) and not d["d_auc_excludes_0"]
    # a noisy difference is not a result
    _write(tmp_path, [_chain("black", s, [f]) for s, f in zip(range(3), [0.1, 0.7, 0.8])])
    d = paired_differences(load_results(params, tmp_path), "red", "test").iloc[0]
    diffs = pd.Series([0.1 - 0.2, 0.7 - 0.6, 0.8 - 0.9])
    assert d["d_fnr_ci95"] == pytest.approx(stats.t.ppf(0.975, 2) * diffs.std(ddof=1) / math.sqrt(3))
    assert not d["d_fnr_excludes_0"]


def test_fn_budget_picks_on_val_not_test(tmp_path):
    params = _params(tmp_path, scenarios=("black",), seeds=(0,), rounds=4)
    # val: round 3 is within the margin, round 4 is not; test says the opposite, and must not matter
    _write(tmp_path, [_chain("black", 0, test_fnrs=[0.1, 0.9, 0.9, 0.1], val_fnrs=[0.1, 0.3, 0.11, 0.5])])
    b = fn_budget(load_results(params, tmp_path), 0.02)["black"]
    assert b["round"] == 3 and b["remaining"] == 0.25


def test_fn_budget_rejects_constant_predictors_and_says_none(tmp_path):
    params = _params(tmp_path, scenarios=("black", "red"), seeds=(0, 1), rounds=3)
    # black's round 3 is all-negative on val for one seed: its FNR 0.1 there is not eligible
    _write(tmp_path, [_chain("black", 0, [0.1, 0.1, 0.1], constant_val=(3,)), _chain("black", 1, [0.1, 0.1, 0.1]),
                      # red's dense model is constant on val: its FN budget is undefined
                      _chain("red", 0, [1.0, 1.0, 1.0], constant_val=(1,)), _chain("red", 1, [1.0, 1.0, 1.0])])
    budget = fn_budget(load_results(params, tmp_path), 0.02)
    assert budget["black"]["round"] == 2
    assert budget["red"] is None


def test_report_reads_only_declared_results_and_names_a_missing_one(tmp_path):
    params = _params(tmp_path, scenarios=("black",), seeds=(0,), rounds=2)
    # stale files of another configuration: a scenario, a baseline and a round the params no longer have
    _write(tmp_path, [_chain("black", 0, [0.1, 0.2, 0.3]), _chain("green", 0, [0.0, 0.0]),
                      _chain("lobs", 0, [1.0, 1.0], kind="baseline"), _chain("black", 5, [0.5, 0.5])])
    df = load_results(params, tmp_path)
    assert set(df["method"]) == {"black"} and set(df["round"]) == {1, 2} and set(df["seed"]) == {0}
    params = _params(tmp_path, scenarios=("black", "blue"), seeds=(0,), rounds=2)
    with pytest.raises(DataError, match=r"reports/rounds/seed_0/blue.json not found"):
        load_results(params, tmp_path)


def test_write_reports_writes_metrics_curves_figures_selection_and_summary(tmp_path):
    params = _params(tmp_path, scenarios=("red", "black"), seeds=(0, 1), rounds=3)
    _write(tmp_path, [_chain("black", s, [0.1, 0.4, 0.1]) for s in (0, 1)]
           + [_chain("red", s, [1.0, 1.0, 1.0], constant_val=(1, 2, 3)) for s in (0, 1)])
    out = tmp_path / "out"
    write_reports(params, tmp_path, out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["black"]["round_2"]["fnr"] == 0.4 and metrics["black"]["round_2"]["n_seeds"] == 2
    assert list(pd.read_csv(out / "curves" / "test" / "black.csv")["round"]) == [1, 2, 3]
    assert (out / "figures" / "test.png").read_bytes()[:4] == b"\x89PNG"
    sel = json.loads((out / "selection.json").read_text())
    assert sel["red"] is None
    assert sel["black"]["round"] == 3 and sel["black"]["weights"] == "models/black/seed_0/round_3/weights.pt"
    summary = (out / "summary.md").read_text()
    assert "| red | none |" in summary
    assert "| black | 25.00 |" in summary.split("FN budget")[1]


def test_collapse_table_counts_constant_models_and_those_that_no_longer_rank(tmp_path):
    params = _params(tmp_path, scenarios=("red", "black"), seeds=(0, 1), rounds=3)
    red = [_chain("red", s, [0.2, 1.0, 1.0]) for s in (0, 1)]
    for chain in red:  # rounds 2-3 all-negative on test; seed 0's round 3 gives every image one score
        for rd in chain["rounds"][1:]:
            rd["test"] = _split(1.0, auc=0.8, constant=True)
    red[0]["rounds"][2]["test"]["auc"] = 0.5
    _write(tmp_path, red + [_chain("black", s, [0.1, 0.2, 0.3]) for s in (0, 1)])
    write_reports(params, tmp_path, tmp_path / "out")
    table = (tmp_path / "out" / "summary.md").read_text().split("## Collapses")[1]
    assert "| red | 4 | 6 | 4 | 0 | 1 |" in table
    assert "| black | 0 | 6 | 0 | 0 | 0 |" in table
