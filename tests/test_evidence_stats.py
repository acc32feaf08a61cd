"""The statistics behind the verdicts, each against a case checked by hand and against scipy's (or
statsmodels') own reading of the same test."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats as sps

from classprune.evidence import stats


def _brute_sign_flip(d, alternative):
    """Every sign pattern enumerated in plain Python: the exact null distribution of the mean."""
    d = np.asarray(d, dtype=float)
    observed = d.mean()
    means = np.array([np.mean(np.array(s) * np.abs(d)) for s in itertools.product((-1, 1), repeat=len(d))])
    eps = 1e-12
    if alternative == "greater":
        return np.mean(means >= observed - eps)
    return np.mean(means <= observed + eps)


def test_sign_flip_hand_checked():
    # [1, 2, 3]: of the 8 sign patterns only (+, +, +) has a mean >= 2, so p = 1/8
    assert stats.sign_flip_test([1.0, 2.0, 3.0], "greater") == pytest.approx(1 / 8)
    # five seeds of one sign (issue 41's AlexNet FNR): the smallest one-sided p there is, 1/32
    assert stats.sign_flip_test([-0.8, -0.1, -0.05, -0.2, -0.01], "less") == pytest.approx(1 / 32)
    assert stats.sign_flip_test([-0.8, -0.1, -0.05, -0.2, -0.01], "greater") == pytest.approx(1.0)
    # one seed: two patterns, so p is 1/2 at best
    assert stats.sign_flip_test([0.3], "greater") == 0.5 and stats.sign_flip_test([0.3], "less") == 1.0


@pytest.mark.parametrize("alternative", ["less", "greater"])
def test_sign_flip_is_exact_and_equals_wilcoxon_on_signed_ranks(alternative):
    d = np.array([0.3, -0.1, 0.25, 0.05, -0.02, 0.4, 0.15, -0.33, 0.22, 0.07])
    assert stats.sign_flip_test(d, alternative) == pytest.approx(_brute_sign_flip(d, alternative))
    # on signed ranks the sign-flip test of the mean is Wilcoxon's signed-rank test (exact, no ties)
    ranks = sps.rankdata(np.abs(d)) * np.sign(d)
    assert stats.sign_flip_test(ranks, alternative) == pytest.approx(
        sps.wilcoxon(d, alternative=alternative, method="exact").pvalue)


def test_sign_flip_vectorized_over_studies_and_seeded_beyond_exact():
    rows = np.array([[1.0, 2.0, 3.0], [-1.0, 2.0, 3.0]])
    np.testing.assert_allclose(stats.sign_flip_test(rows, "greater"), [1 / 8, _brute_sign_flip(rows[1], "greater")])
    d = np.random.default_rng(1).normal(0.1, 1.0, 20)   # 2**20 patterns: Monte Carlo, the same every call
    assert stats.sign_flip_test(d, "greater") == stats.sign_flip_test(d, "greater")


def test_noninferiority_and_tost_hand_checked():
    # d + 0.01 is positive in all three seeds: the one-sided p is 1/8
    assert stats.noninferiority_test([-0.005, -0.002, 0.001], 0.01) == pytest.approx(1 / 8)
    # both one-sided tests see four seeds of one sign each: TOST p = max(1/16, 1/16)
    assert stats.equivalence_test([0.001, 0.002, -0.001, 0.0005], 0.01) == pytest.approx(1 / 16)
    # an effect of 0.05 is not within a margin of 0.01
    assert stats.equivalence_test([0.05, 0.06, 0.04, 0.05], 0.01) == pytest.approx(1.0)


def test_bca_interval_is_scipys_and_a_constant_sample_its_own():
    d = np.array([0.12, 0.05, -0.02, 0.3, 0.08, 0.11, 0.02, 0.07])
    low, high = stats.bca_interval(d)
    ref = sps.bootstrap((d,), np.mean, method="BCa", n_resamples=stats.BOOTSTRAP_RESAMPLES,
                        random_state=stats.SEED).confidence_interval
    assert (low, high) == pytest.approx((ref.low, ref.high))
    assert low < d.mean() < high
    # three seeds that differ by the same 5/90 step: a zero-width interval, [d, d]
    assert stats.bca_interval([-5 / 90] * 3) == pytest.approx((-5 / 90, -5 / 90))


def test_holm_hand_checked():
    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01, max(0.03, 2 x 0.03), max(0.06, 1 x 0.04)
    np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(stats.holm([0.2, 0.9]), [0.4, 0.9])


def test_clopper_pearson_hand_checked_and_beta_quantiles():
    # 0 collapses in 20 seeds: the upper bound solves (1 - p)^20 = 0.025
    low, high = stats.clopper_pearson(0, 20)
    assert low == 0 and high == pytest.approx(1 - 0.025 ** (1 / 20))
    low, high = stats.clopper_pearson(7, 20)
    assert (low, high) == pytest.approx((sps.beta.ppf(0.025, 7, 14), sps.beta.ppf(0.975, 8, 13)))


def test_mcnemar_exact_hand_checked_and_statsmodels():
    from statsmodels.stats.contingency_tables import mcnemar

    black = np.array([1, 0, 0, 0, 0, 0], bool)
    red = np.array([1, 1, 1, 1, 0, 0], bool)
    # discordant seeds: 3 where only red collapses, 0 where only black does: P(X <= 0 | 3, 1/2) = 1/8
    assert stats.mcnemar_exact(black, red, "less") == pytest.approx(1 / 8)
    table = [[np.sum(black & red), np.sum(black & ~red)], [np.sum(~black & red), np.sum(~black & ~red)]]
    assert stats.mcnemar_exact(black, red, "two-sided") == pytest.approx(mcnemar(table, exact=True).pvalue)
    assert stats.mcnemar_exact(red, red) == 1.0   # no discordant seed: no evidence either way


def test_probability_of_improvement_is_the_mann_whitney_statistic():
    x, y = np.array([1.0, 2, 3, 4]), np.array([0.0, 1, 2, 5])
    # pairs x > y: 1>0, 2>0, 2>1, 3>0, 3>1, 3>2, 4>0, 4>1, 4>2 = 9, ties (1,1), (2,2) = 2 x 1/2: 10 / 16
    point, low, high = stats.probability_of_improvement(x, y)
    assert point == pytest.approx(10 / 16) == pytest.approx(sps.mannwhitneyu(x, y).statistic / 16)
    assert low <= point <= high
    assert stats.probability_of_improvement([5.0, 6, 7], [1.0, 2, 3]) == (1.0, 1.0, 1.0)
