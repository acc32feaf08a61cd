"""The figure module: level labels, series spread along x, and a PNG from report.aggregate's frame."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from classprune.config import load_params
from classprune.reporting.figures import _offsets, level_label, majority_accuracy, plot_figure, run_title
from classprune.profiles import merged_params

ROOT = Path(__file__).resolve().parents[1]


def test_levels_read_as_the_pruning_levels():
    assert [level_label(100 * 0.5 ** k) for k in range(7)] == ["100", "50", "25", "12.5", "6.25", "3.1", "1.6"]


def test_series_get_distinct_offsets_within_a_level():
    off = _offsets(["snip", "lobs", "red", "black"])
    assert len(set(off.values())) == 4
    assert max(off.values()) / min(off.values()) < 2 ** 0.71    # never reaches the next level (factor 2)


def _agg(methods: dict[str, str]) -> pd.DataFrame:
    rows = []
    for method, kind in methods.items():
        for k in (1, 2, 3):
            rows.append({"split": "test", "method": method, "kind": kind, "round": k, "remaining": 0.5 ** (k - 1),
                         "auc": 0.9, "accuracy": 0.8, "fnr": 1.0 if method != "black" else 0.1, "fpr": 0.0,
                         **{f"{m}_ci95": float("nan") for m in ("auc", "accuracy", "fnr", "fpr")}, "n_seeds": 1})
    return pd.DataFrame(rows)


def test_plot_figure_writes_png_with_title_saying_what_ran(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(merged_params("tiny", ROOT / "params.yaml", ROOT / "profiles")))
    params = load_params(tmp_path / "params.yaml")
    agg = _agg({"red": "scenario", "black": "scenario", "snip": "baseline", "lobs": "baseline"})
    rounds = pd.DataFrame([{"split": "test", "tp": 3, "fn": 1, "tn": 15, "fp": 1}])
    assert majority_accuracy(rounds, "test") == 0.8
    plot_figure(agg, "test", params, tmp_path / "fig.png", majority_accuracy=0.8)
    assert (tmp_path / "fig.png").read_bytes()[:4] == b"\x89PNG"
    title = run_title(agg, "test", params)
    assert "tiny profile" in title and "synthetic" in title and "1 seed (0)" in title and "4 iterations" in title
