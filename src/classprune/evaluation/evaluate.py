"""Evaluation of trained networks: val and test separately (never pooled), at argmax and at an operating point.

One evaluate stage per chain scores every round, so a change of metric code never retrains.
"""
from __future__ import annotations

import torch

from .. import io
from ..config import Params
from ..device import log_device, set_threads, stage_device
from ..lottery.runner import build, channel_units, train_loader
from ..paths import metrics_path, round_paths, scores_path


def evaluate_model(params: Params, model: torch.nn.Module, mask: dict, initial: dict | None = None) -> dict:
    """Metrics on val and test separately (never pooled), plus the sparsity of ``mask``.

    Besides the argmax decision (the paper's), an operating point: the threshold on the positive-class
    log-odds chosen on val (``evaluate.target_fnr``, ``threshold_rule``), then applied unchanged to test. ``diagnosis`` says on
    val whether the network is alive, and if not why (``classprune.evaluation.diagnose``); given W0 (``initial``),
    also the share of W0's magnitude the mask keeps per layer.
    """
    from . import diagnose
    from ..lottery.masks import remaining, remaining_all
    from .metrics import binary_metrics, operating_threshold, predict

    n_parameters = sum(p.numel() for p in model.parameters())
    n_nonzero = sum(int((p != 0).sum()) for p in model.parameters())
    device = next(model.parameters()).device
    out = {"remaining": remaining(mask), "remaining_all": remaining_all(mask, n_parameters), "nonzero": n_nonzero}
    preds = {s: predict(model, train_loader(params, s, train=False, device=device), desc=s) for s in ("val", "test")}
    if diagnose.applies(model):
        val = train_loader(params, "val", train=False, device=device)
        out["diagnosis"] = diagnose.diagnose(model, val, *preds["val"][1:], mask, initial)
    ev = params.evaluate
    threshold = operating_threshold(*preds["val"][:2], ev.target_fnr,
                                    ev.fnr_confidence if ev.threshold_rule == "bound" else None)
    out["threshold"] = threshold
    out["scores"] = {s: (p[0], p[1]) for s, p in preds.items()}  # for ROC/PR curves; write_result stores them
    for split_name, (labels, scores, argmax) in preds.items():
        out[split_name] = binary_metrics(labels, scores, argmax)
        at_op = (scores >= threshold).astype(int) if threshold is not None else argmax
        out[split_name]["op"] = binary_metrics(labels, scores, at_op)
    return out


def compact_size(params: Params, model: torch.nn.Module, mask: dict, units) -> dict:
    """MACs of one image and parameters of a channel ticket as it runs, its pruned channels removed
    (Torch-Pruning's counter, not a hand count)."""
    from ..lottery.channels import compact, macs_and_params

    small = compact(model, mask, units, params.data.image_size)
    macs, n = macs_and_params(small, params.data.image_size)
    return {"macs": macs, "params": n}


def write_result(result: dict) -> None:
    """The result file (reports/rounds/..json) and, apart, every round's val/test labels and log-odds scores
    (reports/scores/..npz, float32) from which the report draws ROC and precision-recall curves."""
    import numpy as np

    arrays = {}
    for rd in result["rounds"]:
        for split, (labels, scores) in rd.pop("scores", {}).items():
            arrays[f"{split}_labels"] = np.asarray(labels, dtype=np.int8)
            arrays[f"{split}_round_{rd['round']}"] = np.asarray(scores, dtype=np.float32)
    io.write_json(metrics_path(result["method"], result["seed"]), result)
    io.write_npz(scores_path(result["method"], result["seed"]), arrays)


def evaluate_chain(params: Params, scenario: str, seed: int, granularity: str = "weight") -> dict:
    """Every round of one chain in one process: metrics code changes never retrain. A channel chain's rounds
    also say what the compact network costs (MACs, parameters)."""
    from ..lottery.masks import load_mask
    from ..paths import chain
    from ..lottery.trainlog import chain_csv, gather

    method = chain(scenario, granularity)
    set_threads(params.train.threads)
    label = f"evaluate {method} seed {seed}"
    device = stage_device(params.train.device, label, log=False)
    paths = {r.k: round_paths(params, scenario, seed, r.k, granularity) for r in params.prune.rounds}
    states = [(k, io.load_torch(cur.weights), load_mask(cur.mask)) for k, cur in paths.items()]
    w0 = io.load_torch(round_paths(params, scenario, seed, 0, granularity).weights)
    log_device(device, label)
    rounds, units = [], None
    for k, state, mask in states:
        model = build(params, seed, state, device)
        if granularity != "weight":  # one architecture for every round: its channel units traced once
            units = units or channel_units(params, model)
        extra = {} if units is None else {"granularity": granularity, **compact_size(params, model, mask, units)}
        rounds.append({"round": k, **evaluate_model(params, model, mask, w0), **extra})
    kind = "scenario" if granularity == "weight" else granularity
    write_result({"method": method, "kind": kind, "seed": seed, "rounds": rounds})
    gather({k: cur.train_log for k, cur in paths.items()}, chain_csv(method, seed))
    return {"method": method, "seed": seed,
            "test_auc": [r["test"]["auc"] for r in rounds], "test_fnr": [r["test"]["fnr"] for r in rounds]}


def evaluate_channel_chain(params: Params, scenario: str, seed: int) -> dict:
    """Every round of a scenario's channel ticket."""
    return evaluate_chain(params, scenario, seed, "channel")
