"""The control every channel-ticket claim needs (Liu et al., ICLR 2019; open_lth's randomly_reinitialize
branch): each level's compact architecture from a fresh random init, trained as the ticket's round is.

If it matches the ticket, the ticket's value lies in the architecture the pruning found, not in W0's
surviving weights. Pruned levels only: round 1 is the dense network, no architecture the pruning found (from
scratch it would compare pretraining with none, and it cost a third of the control). The same loss, steps, data order and dropout seed as the ticket's round k; only the
initial weights differ: every layer re-initialised by PyTorch's default for its own (compact) shape, from a
seed no ticket uses, so the pretrained features are not kept either (as Liu et al. train from scratch).
"""
from __future__ import annotations

import torch

from ..config import Params
from ..device import log_device, set_threads, stage_device, state_to_cpu
from ..paths import reinit_method, round_paths

SEED_OFFSET = 1_000_003  # control seeds never meet a ticket's seed


def fresh_compact(params: Params, seed: int, mask: dict):
    """The compact network of ``mask``, every layer freshly initialised for its own shape, with the map of
    its state back to full shape."""
    from .runner import network_args, trainable
    from ..models.network import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + SEED_OFFSET)
        full = build_model("none", seed=seed + SEED_OFFSET, **network_args(params))
        small, grow = trainable(params, "channel", full, mask)
        for module in small.modules():
            if hasattr(module, "reset_parameters") and module is not small:
                module.reset_parameters()
    return small, grow


def reinit_channel(params: Params, scenario: str, seed: int) -> dict:
    """Every level of a scenario's channel ticket trained from a fresh random init and evaluated as the
    ticket is (val and test): the result file ``<scenario>-channel-reinit``."""
    from ..evaluation.evaluate import evaluate_model, write_result
    from .runner import build, round_seed, scenario_loss, train_loader
    from .masks import load_mask
    from .train import sgd, train_masked

    set_threads(params.train.threads)
    method = reinit_method(scenario)
    device = stage_device(params.train.device, f"{method} seed {seed}", log=False)
    log_device(device, f"{method} seed {seed}")
    t, rounds = params.train, []
    for r in (r for r in params.prune.rounds if r.k > 1):
        mask = load_mask(round_paths(params, scenario, seed, r.k, "channel").mask)
        model, grow = fresh_compact(params, seed, mask)
        initial = grow(state_to_cpu(model.state_dict()))
        model = model.to(device)
        loss, _ = scenario_loss(params, scenario, r.k, device)
        torch.manual_seed(round_seed(seed, r.k))  # dropout, as the ticket's round
        loader = train_loader(params, seed=round_seed(seed, r.k), device=device)
        train_masked(model, {}, loader, loss, t.iterations, **sgd(t), desc=f"{method} seed {seed} level {r.k}")
        full = build(params, seed, grow(state_to_cpu(model.state_dict())), device)
        rounds.append({"round": r.k, "granularity": "channel", **evaluate_model(params, full, mask, initial)})
    write_result({"method": method, "kind": "reinit", "seed": seed, "rounds": rounds})
    return {"method": method, "seed": seed, "test_auc": [rd["test"]["auc"] for rd in rounds]}
