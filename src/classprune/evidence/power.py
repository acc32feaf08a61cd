"""How many seeds a claim needs: a simulation on the committed (pilot) variances.

For one claim, family and level, the pilot's paired per-seed values are resampled with replacement (whole
seeds, so a collapsed seed and its partner stay together and the bimodal mixture is kept) into ``SIMS``
simulated studies of n seeds, smoothed (a Gaussian kernel of Silverman's bandwidth added to each drawn
difference, so that 5 pilot seeds of one sign do not promise that every future seed has it too; binary
outcomes are drawn as they are); the claim's own test runs on each, at alpha / (the family's levels) (Holm's
first step, the strictest). The power at n is the share that rejects; ``seeds_needed`` is the fewest n of
``GRID`` whose power reaches the target (inf: none does; the pilot shows no such effect). A projection from
3-5 seeds: it leaves out that the pilot's own spread is uncertain, and that more eval positives (the evidence
profile's 300 against 90) shrink the per-seed noise, so for FNR it errs on the side of more seeds.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from .claims import Claim, Hypotheses, paired
from .verdicts import pvalue

GRID = (3, 5, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60)
SIMS = 400
MC_RESAMPLES = 2048   # sign patterns per simulated test: p resolves to 1/2049, well below alpha / 7


def rejects(claim: Claim, a: np.ndarray, b: np.ndarray, alpha: float) -> np.ndarray:
    """Whether the claim's test rejects in each simulated study (rows of a and b: studies; columns: seeds)."""
    return pvalue(claim, a, b, n_resamples=min(2 ** a.shape[-1], MC_RESAMPLES)) < alpha


def seeds_needed(claim: Claim, pairs: pd.DataFrame, alpha: float, target: float, seed: int = 0) -> tuple[float, dict]:
    """(fewest seeds of GRID reaching ``target`` power or inf, {n: power} up to there)."""
    rng = np.random.default_rng(seed)
    a, b = pairs["a"].to_numpy(), pairs["b"].to_numpy()
    d = a - b
    bandwidth = 0.0 if claim.kind == "rate" or len(d) < 2 else 1.06 * float(np.std(d, ddof=1)) * len(d) ** -0.2
    curve = {}
    for n in GRID:
        pick = rng.integers(0, len(a), size=(SIMS, n))
        a_sim = a[pick] + bandwidth * rng.standard_normal((SIMS, n))
        curve[n] = float(np.mean(rejects(claim, a_sim, b[pick], alpha)))
        if curve[n] >= target:
            return float(n), curve
    return math.inf, curve


def analysis(hyp: Hypotheses, root: Path = Path(".")) -> pd.DataFrame:
    """One row per claim, network, family and level with a pilot: pilot seeds, effect, seeds_needed, power."""
    rows = []
    for network, sources in hyp.networks.items():
        path = root / sources.get("pilot", "")
        if "pilot" not in sources or not path.is_file():
            continue
        rounds = pd.read_csv(path)
        for claim in hyp.claims:
            alpha = hyp.alpha / len(claim.levels)
            for granularity, scenario in claim.families():
                for level in claim.levels:
                    pairs = paired(rounds, hyp.split, claim.metric, *claim.arms(granularity, scenario, level))
                    if pairs.empty:
                        continue
                    need, curve = seeds_needed(claim, pairs, alpha, hyp.power)
                    rows.append({"claim": claim.id, "network": network, "granularity": granularity,
                                 "scenario": scenario, "level": level, "pilot_seeds": len(pairs),
                                 "pilot_effect": float((pairs["a"] - pairs["b"]).mean()),
                                 "pilot_sd": float((pairs["a"] - pairs["b"]).std(ddof=1)) if len(pairs) > 1 else math.nan,
                                 "seeds_needed": need,
                                 "power_at_needed": curve[int(need)] if math.isfinite(need) else max(curve.values()),
                                 "alpha_per_level": alpha})
    return pd.DataFrame(rows)
