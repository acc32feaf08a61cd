"""The verdict table: every declared claim tested on every network's rounds, per level and bit set.

``reports/evidence/verdicts.csv`` (one row per claim, network, granularity, scenario, level, bits) and
``verdicts.md`` (the same rows per claim, the bit sets side by side, and whether their verdicts agree). A claim
the README makes is a row here; the README says what the row says.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from . import stats
from .claims import Claim, Hypotheses, paired

EVIDENCE = Path("reports/evidence")
POWER = EVIDENCE / "power.csv"
VERDICTS_CSV = EVIDENCE / "verdicts.csv"
VERDICTS_MD = EVIDENCE / "verdicts.md"
KEYS = ["claim", "network", "granularity", "scenario", "level"]
POSITIVE = {"direction": "supported", "noninferiority": "supported", "rate": "supported", "equivalence": "equivalent"}


def pvalue(claim: Claim, a: np.ndarray, b: np.ndarray, n_resamples: int | None = None) -> np.ndarray:
    """The claim's own test on paired values (last axis: seeds; leading axes: studies, as the power analysis
    simulates them)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if claim.kind == "direction":
        return stats.sign_flip_test(d, claim.alternative, n_resamples=n_resamples)
    if claim.kind == "noninferiority":
        return stats.sign_flip_test(d, "greater", shift=-claim.margin, n_resamples=n_resamples)
    if claim.kind == "equivalence":   # TOST: the larger of the two one-sided p-values
        return np.maximum(stats.sign_flip_test(d, "greater", shift=-claim.margin, n_resamples=n_resamples),
                          stats.sign_flip_test(d, "less", shift=claim.margin, n_resamples=n_resamples))
    rows = np.atleast_2d(a), np.atleast_2d(b)
    p = np.array([stats.mcnemar_exact(x.astype(bool), y.astype(bool), claim.alternative) for x, y in zip(*rows)])
    return p.reshape(np.shape(a)[:-1])


def evaluate_claim(claim: Claim, pairs: pd.DataFrame, confidence: float) -> dict:
    """The claim's test on one level's paired seeds: p-value, effect (mean a - b) with its BCa interval, the
    median, P(a better than b) with its interval, and the collapse and dead-network counts of both arms."""
    a, b = _never_a_pass(claim, pairs), pairs["b"].to_numpy()
    d = a - b
    n = len(d)
    row = {"n_seeds": n, "mean_a": _mean(a), "mean_b": _mean(b), "effect": _mean(d),
           "median": float(np.median(d)) if n else math.nan,
           "collapsed_a": int(pairs["constant_a"].sum()), "collapsed_b": int(pairs["constant_b"].sum()),
           "dead_a": int(pairs["dead_a"].sum()), "dead_b": int(pairs["dead_b"].sum()),
           "remaining": _mean(pairs["remaining_a"].to_numpy())}
    if n == 0:
        return row | {"p": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                      "p_improvement": math.nan, "p_improvement_low": math.nan, "p_improvement_high": math.nan}
    row["ci_low"], row["ci_high"] = stats.bca_interval(d, confidence)
    row["p"] = float(pvalue(claim, a, b))
    # P(a better than b): lower is better for error rates and collapses, higher for AUC and accuracy
    sign = -1.0 if claim.metric in ("fnr", "fpr", "constant") else 1.0
    row["p_improvement"], row["p_improvement_low"], row["p_improvement_high"] = \
        stats.probability_of_improvement(sign * a, sign * b, confidence)
    return row


def table(hyp: Hypotheses, power: pd.DataFrame | None = None, root: Path = Path(".")) -> pd.DataFrame:
    """Every claim x network x bit set whose rounds exist, Holm-adjusted within each family, with verdicts."""
    rows = []
    for (network, bits), path in hyp.sources(root).items():
        if not path.is_file():
            continue
        rounds = pd.read_csv(path)
        for claim in hyp.claims:
            for granularity, scenario in claim.families():
                family = []
                for level in claim.levels:
                    arm_a, arm_b = claim.arms(granularity, scenario, level)
                    pairs = paired(rounds, hyp.split, claim.metric, arm_a, arm_b)
                    if pairs.empty:
                        continue
                    family.append({"claim": claim.id, "network": network, "granularity": granularity,
                                   "scenario": scenario, "level": level, "bits": bits,
                                   **evaluate_claim(claim, pairs, hyp.confidence)})
                for row, p_adj in zip(family, stats.holm([r["p"] for r in family])):
                    row["p_adjusted"] = float(p_adj)
                rows += family
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out = _with_power(out, power)
    kinds = {c.id: c.kind for c in hyp.claims}
    out["verdict"] = [_verdict(kinds[r.claim], r.p_adjusted, r.n_seeds, r.seeds_needed, hyp.alpha)
                      for r in out.itertuples()]
    return out


def _verdict(kind: str, p_adjusted: float, n_seeds: int, seeds_needed: float, alpha: float) -> str:
    if p_adjusted < alpha:
        return POSITIVE[kind]
    if math.isfinite(seeds_needed) and n_seeds < seeds_needed:   # inf: the pilot shows no effect to power
        return "underpowered"
    return "not supported"


def _with_power(out: pd.DataFrame, power: pd.DataFrame | None) -> pd.DataFrame:
    """seeds_needed from power.csv (inf: no seed count in its grid reached the power; nan: no pilot)."""
    if power is None or power.empty:
        return out.assign(seeds_needed=math.nan)
    need = power[KEYS + ["seeds_needed"]]
    return out.merge(need, on=KEYS, how="left")


# argmax metrics, and the value a constant predictor is given in the arm the claim favours (the worst one)
ARGMAX_WORST = {"fnr": 1.0, "fpr": 1.0, "accuracy": 0.0, "balanced_accuracy": 0.0}


def _never_a_pass(claim: Claim, pairs: pd.DataFrame) -> np.ndarray:
    """Arm a's values, where a seed whose model a is a constant predictor counts as the worst value of an argmax
    metric: a collapsed model is a collapse, never a pass (a dead black that calls every image positive has
    FNR 0, and would otherwise count for the claim). Threshold-free metrics (AUC) stay as measured."""
    a = pairs["a"].to_numpy(dtype=float).copy()
    if claim.kind != "rate" and claim.metric in ARGMAX_WORST:
        a[pairs["constant_a"].to_numpy(dtype=bool)] = ARGMAX_WORST[claim.metric]
    return a


def _mean(x) -> float:
    return float(np.mean(x)) if len(x) else math.nan
