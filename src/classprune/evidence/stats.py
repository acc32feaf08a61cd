"""The tests behind every verdict: paired by seed, no normality assumed, scipy and statsmodels doing the work.

A seed's paired difference (black - red, ticket - reinit, level - dense) is bimodal when one arm collapses in
some seeds, and only a handful of seeds exist, so nothing here assumes normal data: direction by the sign-flip
permutation test (exact up to ``EXACT_UP_TO`` seeds), effect intervals by the BCa bootstrap, equivalence by
two one-sided sign-flip tests, Holm within a family, rates with Clopper-Pearson intervals, paired binary
outcomes by the exact McNemar test, and the probability of improvement (Agarwal et al. 2021) with a
stratified bootstrap interval. Every function takes arrays whose last axis is the seed.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import stats

Alternative = Literal["less", "greater", "two-sided"]
EXACT_UP_TO = 16           # 2**16 sign patterns; beyond, that many random ones (seeded)
BOOTSTRAP_RESAMPLES = 9999
SEED = 0


def _mean(x, axis=-1):
    return np.mean(x, axis=axis)


def sign_flip_test(d, alternative: Alternative, shift: float = 0.0, n_resamples: int | None = None) -> np.ndarray:
    """p-value of H0 "d - shift is symmetric about 0" against ``alternative`` for its mean (paired data).

    Exact (every one of the 2**n sign patterns) when 2**n <= n_resamples, else Monte Carlo with a fixed seed.
    Vectorized: ``d`` of shape (..., n) gives p of shape (...)."""
    d = np.asarray(d, dtype=float) - shift
    n = d.shape[-1]
    if n < 2:  # one seed: its two sign patterns, which scipy does not take
        return _one_seed(d[..., 0] if n else np.zeros(d.shape[:-1]), alternative)
    n_resamples = n_resamples or 2 ** EXACT_UP_TO
    res = stats.permutation_test((d,), _mean, permutation_type="samples", alternative=alternative,
                                 n_resamples=n_resamples, vectorized=True, axis=-1, random_state=SEED,
                                 batch=max(1, 2 ** 20 // max(n, 1)))
    return np.asarray(res.pvalue)


def _one_seed(x: np.ndarray, alternative: Alternative) -> np.ndarray:
    """p over the patterns +|x| and -|x| (no seed at all: p = 1)."""
    up, down = np.abs(x), -np.abs(x)
    if alternative == "greater":
        return np.asarray(((up >= x) * 0.5 + (down >= x) * 0.5))
    if alternative == "less":
        return np.asarray(((up <= x) * 0.5 + (down <= x) * 0.5))
    return np.ones_like(x)


def noninferiority_test(d, margin: float) -> float:
    """p of H0 "mean d <= -margin" (a is worse than b by the margin or more), one-sided sign-flip test."""
    return float(sign_flip_test(d, "greater", shift=-margin))


def equivalence_test(d, margin: float) -> float:
    """Two one-sided tests (TOST): p of H0 "|mean d| >= margin", the larger of the two one-sided p-values."""
    return float(max(sign_flip_test(d, "greater", shift=-margin), sign_flip_test(d, "less", shift=margin)))


def bca_interval(d, confidence: float = 0.95) -> tuple[float, float]:
    """BCa bootstrap interval of the mean over seeds; a constant sample (every seed the same) is its own
    interval, which is why a verdict never rests on an interval alone."""
    d = np.asarray(d, dtype=float)
    if d.size == 0:
        return float("nan"), float("nan")
    if np.ptp(d) == 0 or d.size < 3:
        return (float(d.min()), float(d.max())) if np.ptp(d) == 0 else (float("nan"), float("nan"))
    res = stats.bootstrap((d,), _mean, method="BCa", confidence_level=confidence, vectorized=True,
                          n_resamples=BOOTSTRAP_RESAMPLES, random_state=SEED)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values of one family (statsmodels)."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, dtype=float)
    if p.size == 0:
        return p
    return multipletests(p, method="holm")[1]


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval of a rate (a collapse count k of n seeds)."""
    if n == 0:
        return float("nan"), float("nan")
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def mcnemar_exact(a, b, alternative: Alternative = "less") -> float:
    """Exact McNemar test on paired binary outcomes (a collapsed, b collapsed per seed): p of H0 "a and b
    are equally likely", ``less`` meaning a happens less often than b. Only discordant seeds count."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(b & ~a))
    if only_a + only_b == 0:
        return 1.0
    return float(stats.binomtest(only_a, only_a + only_b, 0.5, alternative=alternative).pvalue)


def _p_improvement(x, y, axis=-1):
    """P(X > Y) + P(X = Y) / 2 over every pair of runs: the Mann-Whitney U statistic over n m."""
    x, y = np.moveaxis(np.asarray(x), axis, -1), np.moveaxis(np.asarray(y), axis, -1)
    diff = x[..., :, None] - y[..., None, :]
    return np.mean((diff > 0) + 0.5 * (diff == 0), axis=(-2, -1))


def probability_of_improvement(better, worse, confidence: float = 0.95) -> tuple[float, float, float]:
    """P(a run of ``better`` scores above a run of ``worse``) (higher is better: negate an FNR), with a
    stratified bootstrap interval (each arm resampled on its own, as Agarwal et al.)."""
    x, y = np.asarray(better, dtype=float), np.asarray(worse, dtype=float)
    point = float(_p_improvement(x, y))
    if point in (0.0, 1.0):   # every pair one way: every resample says the same
        return point, point, point
    if x.size < 3 or y.size < 3:
        return point, float("nan"), float("nan")
    res = stats.bootstrap((x, y), _p_improvement, method="percentile", confidence_level=confidence,
                          vectorized=True, paired=False, n_resamples=BOOTSTRAP_RESAMPLES, random_state=SEED)
    return point, float(res.confidence_interval.low), float(res.confidence_interval.high)
