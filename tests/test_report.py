"""The versioned reports: seed aggregation with 95 % CI, the FN budget and the files DVC tracks."""
import json
import math
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

import yaml

from classprune.config import load_params
from classprune.profiles import merged_params
from classprune.report import aggregate, fn_budget, load_rounds, write_reports


def _round(method, seed, k, fnr, auc=0.9):
    split = {"accuracy": 0.9, "auc": auc, "fnr": fnr, "fpr": 0.1, "tp": 1, "fp": 1, "tn": 9, "fn": 1}
    return {"method": method, "kind": "scenario", "seed": seed, "round": k, "remaining": 0.5 ** (k - 1),
            "test": split, "val": split}


def _write(rounds_dir, records):
    for r in records:
        path = rounds_dir / f"seed_{r['seed']}" / r["method"] / f"round_{r['round']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(r))


def _agg(fnrs):
    rows = [{"split": "test", "method": "black", "kind": "scenario", "round": k, "remaining": 0.5 ** (k - 1),
             "fnr": f} for k, f in enumerate(fnrs, start=1)]
    return pd.DataFrame(rows)


def test_fn_budget_is_the_smallest_level_within_the_margin_even_after_a_worse_round():
    # round 2 misses the budget, rounds 3-4 meet it again, round 5 misses: the answer is round 4's level
    assert fn_budget(_agg([0.10, 0.30, 0.11, 0.12, 0.50]), "test", 0.02) == {"black": 0.125}


def test_fn_budget_is_the_dense_level_when_every_pruned_round_misses():
    assert fn_budget(_agg([0.10, 0.2, 0.3]), "test", 0.02) == {"black": 1.0}


def test_fn_budget_is_undefined_without_a_dense_fnr():
    assert fn_budget(_agg([float("nan"), 0.1]), "test", 0.02) == {"black": None}


def test_seeds_are_averaged_with_a_t_interval(tmp_path):
    _write(tmp_path, [_round("black", 0, 1, 0.1), _round("black", 1, 1, 0.3)])
    agg = aggregate(load_rounds(tmp_path))
    row = agg[(agg["split"] == "test")].iloc[0]
    assert row["fnr"] == pytest.approx(0.2)
    half = stats.t.ppf(0.975, 1) * pd.Series([0.1, 0.3]).std(ddof=1) / math.sqrt(2)
    assert row["fnr_ci95"] == pytest.approx(half)
    assert row["n_seeds"] == 2


def test_write_reports_writes_metrics_curves_figures_and_summary(tmp_path):
    root = Path(__file__).parents[1]
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(merged_params("tiny", root / "params.yaml", root / "profiles")))
    params = load_params(params_file)
    rounds = tmp_path / "rounds"
    _write(rounds, [_round("black", 0, k, f) for k, f in ((1, 0.1), (2, 0.4), (3, 0.1))])
    write_reports(params, rounds, tmp_path / "out")
    out = tmp_path / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["black"]["round_2"]["fnr"] == 0.4 and "fnr_ci95" not in metrics["black"]["round_2"]
    assert list(pd.read_csv(out / "curves" / "test" / "black.csv")["round"]) == [1, 2, 3]
    assert (out / "figures" / "test.png").read_bytes()[:4] == b"\x89PNG"
    summary = (out / "summary.md").read_text()
    # round 3 meets the budget again; the row shows its FNR, FPR and AUC
    assert "| black | 25.00 | 0.1000 | 0.1000 | 0.9000 |" in summary.split("FN budget")[1]
