"""Declared claims to verdicts: the arms each claim compares, Holm within a family, the verdict rules, and a
hypotheses file that says something wrong stopping with one line."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from classprune.errors import ConfigError
from classprune.evidence import claims, power, verdicts

ROWS = ["method", "seed", "round", "split", "remaining", "auc", "fnr", "constant", "score_constant"]


def _rounds(n_seeds: int, black_fnr: float, red_fnr: float, red_collapses: int = 0, rng_seed: int = 0) -> pd.DataFrame:
    """Rounds of black and red (weight tickets, 3 levels): FNR around the given means, red constant in the
    first ``red_collapses`` seeds (FNR 1, AUC 0.5)."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for seed in range(n_seeds):
        for k in (1, 2, 3):
            for method, fnr in (("black", black_fnr), ("red", red_fnr)):
                collapsed = method == "red" and seed < red_collapses
                f = 1.0 if collapsed else float(np.clip(fnr + rng.normal(0, 0.03), 0, 1))
                auc = 0.5 if collapsed else 0.96 + rng.normal(0, 0.002)
                rows.append([method, seed, k, "test", 0.5 ** (k - 1), auc, f, collapsed, False])
    return pd.DataFrame(rows, columns=ROWS)


def _hypotheses(tmp_path, rounds: pd.DataFrame, claims_list: list[dict]) -> claims.Hypotheses:
    rounds.to_csv(tmp_path / "rounds.csv", index=False)
    doc = {"alpha": 0.05, "confidence": 0.95, "split": "test", "power": 0.8,
           "networks": {"alexnet": {"avx2": "rounds.csv", "pilot": "rounds.csv"}}, "claims": claims_list}
    (tmp_path / "h.yaml").write_text(yaml.safe_dump(doc))
    return claims.load(tmp_path / "h.yaml")


FNR_CLAIM = {"id": "fnr", "says": "black's FNR below red's", "kind": "direction", "metric": "fnr", "a": "black",
             "b": "red", "alternative": "less", "granularities": ["weight"], "levels": [2, 3]}
NOLOSS = {"id": "noloss", "says": "no AUC loss", "kind": "noninferiority", "metric": "auc", "a": "level",
          "b": "dense", "margin": 0.01, "scenarios": ["black"], "granularities": ["weight"], "levels": [2, 3]}


def test_a_clear_effect_over_enough_seeds_is_supported_and_holm_adjusts_within_the_family(tmp_path):
    hyp = _hypotheses(tmp_path, _rounds(12, 0.1, 0.3, red_collapses=2), [FNR_CLAIM, NOLOSS])
    df = verdicts.table(hyp, root=tmp_path)
    fnr = df[df["claim"] == "fnr"]
    assert fnr["verdict"].tolist() == ["supported", "supported"]
    assert (fnr["n_seeds"] == 12).all() and (fnr["collapsed_b"] == 2).all() and (fnr["collapsed_a"] == 0).all()
    assert fnr["p_adjusted"].min() == pytest.approx(2 * fnr["p"].min())   # Holm over the family's 2 levels
    # the effect is mean(black - red); the median sits apart from it where collapsed seeds pull the mean
    assert (fnr["effect"] < fnr["median"]).all() and (fnr["ci_high"] < 0).all()
    assert (fnr["p_improvement"] > 0.9).all()
    assert df.loc[df["claim"] == "noloss", "verdict"].eq("supported").all()


def test_no_effect_with_the_seeds_power_asks_for_is_not_supported_and_with_fewer_underpowered(tmp_path):
    hyp = _hypotheses(tmp_path, _rounds(6, 0.2, 0.2), [FNR_CLAIM])
    df = verdicts.table(hyp, root=tmp_path)
    assert df["verdict"].eq("not supported").all()          # no power table: nothing to say it is too few
    need = df[verdicts.KEYS].assign(seeds_needed=[20.0, float("inf")])
    df = verdicts.table(hyp, power=need, root=tmp_path)
    assert df["verdict"].tolist() == ["underpowered", "not supported"]
    text = verdicts_md(df, hyp)
    assert "**underpowered** (needs 20)" in text


def verdicts_md(df, hyp):
    from classprune.evidence.report import markdown

    return markdown(df, hyp)


def test_five_one_sign_seeds_do_not_carry_a_claim_over_six_levels(tmp_path):
    """Issue 41's point: 5 of 5 seeds of one sign give p = 1/32 one-sided; over a family of levels, Holm
    lifts it above 0.05 for all but the smallest."""
    claim = dict(FNR_CLAIM, levels=[1, 2, 3])
    hyp = _hypotheses(tmp_path, _rounds(5, 0.1, 0.5), [claim])
    df = verdicts.table(hyp, root=tmp_path)
    assert df["p"].tolist() == pytest.approx([1 / 32] * 3)
    assert df["p_adjusted"].tolist() == pytest.approx([3 / 32] * 3)
    assert df["verdict"].eq("not supported").all()


def test_power_asks_for_more_seeds_when_the_pilot_is_noisier(tmp_path):
    clear = _hypotheses(tmp_path, _rounds(5, 0.1, 0.3), [FNR_CLAIM])
    noisy = claims.paired(_rounds(5, 0.25, 0.3, rng_seed=3), "test", "fnr", ("black", 2), ("red", 2))
    need_clear, _ = power.seeds_needed(clear.claims[0], claims.paired(_rounds(5, 0.1, 0.3), "test", "fnr",
                                                                     ("black", 2), ("red", 2)), 0.025, 0.8)
    need_noisy, _ = power.seeds_needed(clear.claims[0], noisy, 0.025, 0.8)
    assert 5 <= need_clear < need_noisy


@pytest.mark.parametrize("change, message", [
    ({"a": "ticket", "b": "red"}, "arms ticket vs red"),
    ({"alternative": None}, "take an alternative"),
    ({"margin": 0.01}, "take a margin, the others none"),
    ({"scenarios": ["black"]}, "scenarios are for"),
    ({"metric": "loss"}, "claims.0.metric"),
])
def test_a_wrong_claim_is_one_line(tmp_path, change, message):
    claim = {k: v for k, v in {**FNR_CLAIM, **change}.items() if v is not None}
    with pytest.raises(ConfigError, match=message) as err:
        _hypotheses(tmp_path, _rounds(3, 0.1, 0.2), [claim])
    assert "\n" not in str(err.value)


def test_the_committed_hypotheses_load_and_every_claim_has_families():
    hyp = claims.load(claims.HYPOTHESES)
    assert {c.id for c in hyp.claims} >= {"fnr_black_below_red", "auc_black_noninferior_red", "auc_no_loss_vs_dense",
                                          "auc_equivalent_to_dense", "channel_ticket_beats_reinit",
                                          "collapse_black_below_red"}
    assert all(c.families() for c in hyp.claims)


def test_the_verdicts_stage_lists_the_code_it_loads_and_writes_both_files(tmp_path):
    """The `verdicts` stage (reports/evidence/dvc.yaml) run as DVC runs it, on a small hypotheses file: every
    project module it loads is a dep (or plumbing), and every evidence module it lists is one it loads."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    from test_dvc_pipeline import PLUMBING

    root = claims.HYPOTHESES.resolve().parents[2]
    (tmp_path / "stages").mkdir()
    shutil.copy(root / "stages" / "verdicts.py", tmp_path / "stages")
    shutil.copy(root / "params.yaml", tmp_path)
    (tmp_path / "reports" / "evidence").mkdir(parents=True)
    hyp = _hypotheses(tmp_path / "reports" / "evidence", _rounds(4, 0.1, 0.3), [FNR_CLAIM, NOLOSS])
    assert hyp.claims
    text = (tmp_path / "reports" / "evidence" / "h.yaml").read_text().replace("rounds.csv", "reports/evidence/rounds.csv")
    (tmp_path / "reports" / "evidence" / "hypotheses.yaml").write_text(text)
    log = tmp_path / "modules.jsonl"
    subprocess.run([sys.executable, "stages/verdicts.py"], cwd=tmp_path, check=True, capture_output=True,
                   env={**os.environ, "CLASSPRUNE_MODULES_LOG": str(log)})
    assert (tmp_path / "reports" / "evidence" / "verdicts.csv").is_file()
    assert "## fnr" in (tmp_path / "reports" / "evidence" / "verdicts.md").read_text()
    stage = yaml.safe_load((root / "reports" / "evidence" / "dvc.yaml").read_text())["stages"]["verdicts"]
    deps = set(stage["deps"])
    loaded = set(json.loads(log.read_text().splitlines()[0])["files"])
    plumbing = PLUMBING | {"src/classprune/evidence/__init__.py"}
    assert loaded - deps - plumbing == set()
    assert {d for d in deps if d.startswith("src/")} - loaded == set()


def test_the_readme_carries_the_headline_table_the_verdicts_stage_wrote():
    from classprune.evidence.report import HEADLINE_MD

    root = claims.HYPOTHESES.resolve().parents[2]
    text = (root / "README.md").read_text()
    block = text[text.index("<!-- headline:start -->\n") + len("<!-- headline:start -->\n"):text.index("<!-- headline:end -->")]
    assert block == (root / HEADLINE_MD).read_text()


def test_the_committed_verdicts_are_those_of_the_committed_rounds():
    """`dvc status` of the verdicts stage: the table was made from the hypotheses, power analysis, code and
    rounds as committed (a rounds file collected without rerunning the stage fails here)."""
    import subprocess

    root = claims.HYPOTHESES.resolve().parents[2]
    out = subprocess.run(["dvc", "status", "reports/evidence/dvc.yaml"], cwd=root, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "up to date" in out.stdout, out.stdout


def test_a_collapsed_model_in_the_favoured_arm_counts_against_the_claim(tmp_path):
    """A dead black that calls every image positive has FNR 0: it must count as a collapse, never as the
    lower FNR the claim asks for."""
    rounds = _rounds(6, 0.1, 0.3)
    dead = (rounds["method"] == "black") & (rounds["seed"] == 0) & (rounds["round"] == 2)
    rounds.loc[dead, ["fnr", "constant", "score_constant"]] = [0.0, True, True]
    hyp = _hypotheses(tmp_path, rounds, [FNR_CLAIM])
    row = verdicts.table(hyp, root=tmp_path).set_index("level").loc[2]
    red_fnr = rounds[(rounds["method"] == "red") & (rounds["seed"] == 0) & (rounds["round"] == 2)]["fnr"].item()
    assert row["collapsed_a"] == 1 and row["dead_a"] == 1
    assert row["effect"] > rounds[dead]["fnr"].item() - red_fnr           # seed 0 counts as FNR 1, not 0
    assert row["p"] > verdicts.table(_hypotheses(tmp_path, _rounds(6, 0.1, 0.3), [FNR_CLAIM]),
                                     root=tmp_path).set_index("level").loc[2, "p"]
