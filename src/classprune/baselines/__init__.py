"""The paper's comparison methods: SNIP (with and without retraining), L-OBS and MobileNet.

One module per method; ``registry.METHODS`` names them (config validates against it without importing the
methods). A method is ``fn(params, seed, device) -> [result, ...]``; ``run_baseline`` writes the results as
``reports/rounds/seed_<s>/<method>.json``, the format the LT evaluate stage writes, so the report
stage puts them beside the scenarios without knowing about them. Pruning baselines are evaluated at the LT
levels (1-p)^(k-1), k = 1..R, under ``round`` k.

The SNIP and L-OBS scores are criteria of the core registry (``pruning.CRITERIA``, registered when their
module is imported): selection is the core's ``keep_top``, so they prune exactly like the LT scenarios do.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .registry import METHODS, get_baseline, register_baseline

if TYPE_CHECKING:
    from ..config import Params

__all__ = ["METHODS", "get_baseline", "register_baseline", "run_baseline"]


def run_baseline(params: Params, method: str, seed: int) -> dict:
    """Run one baseline for one seed on ``train.device``; write its result file (every level)."""
    from .. import trainlog
    from ..device import set_threads, stage_device
    from ..evaluation import write_result

    fn = get_baseline(method)
    params.check_seed(seed)  # a seed outside run.seeds is a user error
    set_threads(params.train.threads)
    device = stage_device(params.train.device, f"baseline {method} seed {seed}")
    with trainlog.collecting(trainlog.chain_csv(method, seed)):  # training curves of the methods that train
        results = fn(params, seed, device)
    write_result({"method": method, "kind": "baseline", "seed": seed, "rounds": results})
    return {"method": method, "seed": seed,
            "levels": [{"round": r["round"], "remaining": round(r["remaining"], 6), "test_auc": r["test"]["auc"]}
                       for r in results]}
