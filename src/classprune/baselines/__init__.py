"""The paper's comparison methods: SNIP (with and without retraining), L-OBS and MobileNet.

One module per method; ``registry.METHODS`` names them (config validates against it without importing the
methods). A method is ``fn(params, seed, device) -> [result, ...]``; ``common.run_baseline`` (what the
baseline stage runs) writes the results as ``reports/rounds/seed_<s>/<method>.json``, the format the LT
evaluate stage writes, so the report stage puts them beside the scenarios without knowing about them.
Pruning baselines are evaluated at the LT levels (1-p)^(k-1), k = 1..R, under ``round`` k.

The SNIP and L-OBS scores are criteria of the core registry (``pruning.CRITERIA``, registered when their
module is imported): selection is the core's ``keep_top``, so they prune exactly like the LT scenarios do.
"""
from __future__ import annotations

# re-exports only: this file is imported by every stage (config validates method names) and must hold no logic
from .registry import METHODS, get_baseline, register_baseline

__all__ = ["METHODS", "get_baseline", "register_baseline"]
