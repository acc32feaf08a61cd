"""What every baseline stage runs (``run_baseline``) and the helpers the methods share: the LT levels they
are evaluated at, and device plumbing."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ..config import Params


def levels(params: Params) -> list[tuple[int, float]]:
    """(round k, kept fraction (1-p)^(k-1)): the remaining-weight levels the LT rounds train at."""
    return [(r.k, (1.0 - params.prune.rate) ** (r.k - 1)) for r in params.prune.rounds]


def on_device(batches: Iterable, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches moved to ``device`` (non_blocking: pinned loaders copy asynchronously)."""
    for x, y in batches:
        yield x.to(device, non_blocking=True), None if y is None else y.to(device, non_blocking=True)


def to_device(mask: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {n: m.to(device) for n, m in mask.items()}


def run_baseline(params: Params, method: str, seed: int) -> dict:
    """Run one baseline for one seed on ``train.device``; write its result file (every level)."""
    from ..lottery import trainlog
    from ..device import set_threads, stage_device
    from ..evaluation.evaluate import write_result
    from .registry import get_baseline

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
