"""The lottery-ticket algorithm (paper Alg. 1): W0, then rounds of prune -> rewind -> train.

``run_chain`` is the whole loop in one process, for tests and for users who want one chain without DVC. The
DVC pipeline runs the same ``train_round`` once per stage (one process per round), so there is one
implementation; a channel ticket is one stage per chain (``run_channel_chain``), its compact rounds being
cheaper than a stage's start-up. Round k = 1 trains the dense W0; round k > 1 prunes ``prune.rate`` of the weights that
survived round k-1 by the criterion, rewinds the survivors and trains. With late rewinding
(``prune.rewind_iteration`` = j > 0) the rewind point is the weights after j steps of round 1.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .. import io
from ..config import Params
from ..device import log_device, set_threads, stage_device, state_to_cpu
from ..errors import DataError
from ..paths import CACHE, PRETRAINED_FEATURES, chain, round_paths


def round_seed(seed: int, k: int) -> int:
    """The data-order and dropout seed of round k of a chain (also of a baseline's level k)."""
    return seed * 1000 + k


def train_loader(params: Params, split: str = "train", *, train: bool = True, seed: int = 0,
                 device: torch.device | None = None):
    """A loader over one cached split: shuffled and augmented for training, fixed order for evaluation."""
    from ..data.loader import make_loader

    batch = params.train.batch_size if train else params.evaluate.batch_size
    augment = params.data.augment if train else "none"
    # Per-image augmentation is cheap in a 1-thread worker but slow beside 2 training threads.
    workers = params.train.loader_workers if augment != "none" else 0
    return make_loader(CACHE, split, batch, train=train, augment=augment, seed=seed, num_workers=workers,
                       pin_memory=device is not None and device.type == "cuda")


def scenario_loss(params: Params, scenario: str, k: int, device: torch.device | None = None):
    """The scenario's loss of round k, its gamma resolved on the training class counts: (loss, gamma)."""
    from ..data.loader import class_counts
    from .losses import ClassDependentLoss, resolve_gamma

    sc = params.scenarios[scenario]
    # Paper: a balanced first round learns the class boundary, later rounds favour the positives.
    gamma = resolve_gamma(sc.gamma_first if k == 1 else sc.gamma_rest, class_counts(CACHE, "train"))
    return ClassDependentLoss(gamma, sc.lam, params.train.margin).to(device or "cpu"), gamma


def network_args(params: Params) -> dict:
    """build_model's arguments that params.model sets (all but the weights' source and the seed)."""
    return {"dropout": params.model.dropout, "arch": params.model.arch, "head": params.model.head}


def build(params: Params, seed: int, state: dict | None = None, device: torch.device | None = None,
          features_path: Path = PRETRAINED_FEATURES) -> torch.nn.Module:
    """The seeded network (W0), or, given a checkpoint ``state``, the network holding exactly that state; on
    ``device`` (default CPU). Initialised on the CPU either way, so W0 does not depend on the device."""
    from ..models.network import build_model

    if state is None and params.model.pretrained == "source":
        from ..models.pretrain import build_w0

        if not Path(features_path).is_file():
            raise DataError(f"{features_path} not found; run the pretrain stage first (model.pretrained: source)")
        return build_w0(io.load_torch(features_path), seed, **network_args(params)).to(device or "cpu")
    if state is None:
        return build_model(params.model.pretrained, seed=seed, **network_args(params)).to(device or "cpu")
    # Built on the meta device and filled from the checkpoint: no random init to throw away, and no
    # ImageNet weights to fetch in stages that only continue from saved weights.
    with torch.device("meta"):
        model = build_model("none", seed=seed, **network_args(params))
    model.load_state_dict(state, assign=True)
    return model.to(device or "cpu")


def channel_units(params: Params, model: torch.nn.Module):
    """The channel units (classprune.lottery.channels) of ``prune.channel.layers`` in ``model``."""
    from .channels import units

    return units(model, params.prune.channel.layers, params.data.image_size)


def init(params: Params, scenario: str, seed: int) -> None:
    """Round 0 of a chain: W0 and the all-ones mask. W0 depends on the seed only: every scenario shares it."""
    from .masks import full_mask, save_mask

    model = build(params, seed)
    out = round_paths(params, scenario, seed, 0)
    mask = full_mask(model, params.prune.include_biases, params.prune.ignore)
    state = state_to_cpu(model.state_dict())
    io.save_torch(out.weights, state)
    io.save_torch(out.rewound, state)
    save_mask(mask, out.mask)


def next_mask(params: Params, granularity: str, seed: int, trained: dict, start: dict, mask: dict) -> dict:
    """The mask of the next round: ``prune.rate`` of the surviving weights by ``prune.criterion``, or for
    a channel chain the channel rate of the surviving channels by ``prune.channel.criterion``."""
    p = params.prune
    if granularity == "weight":
        from .pruning import prune

        return prune(trained, start, mask, p.rate, p.scope, p.criterion, p.layer_rates)
    from .channel_criteria import prune_channels

    model = build(params, seed, {n: v.clone() for n, v in trained.items()})
    return prune_channels(model, mask, channel_units(params, model), params.channel_rate(), p.channel.scope,
                          p.channel.criterion, params.data.image_size)


def _same(state: dict) -> dict:
    return state


def trainable(params: Params, granularity: str, model: torch.nn.Module, mask: dict):
    """What a round trains, on the CPU: the masked network (weight tickets), or for a channel ticket the
    compact network (its pruned channels removed: the same function at a fraction of the MACs, and nothing
    to mask), with the map of its state back to full shape (the artifact contract)."""
    if granularity == "weight":
        return model, _same
    from .channels import compact, expand, live_index

    units = channel_units(params, model)
    index, like = live_index(mask, units), model.state_dict()
    return compact(model, mask, units, params.data.image_size), lambda state: expand(state, index, like)


def train_round(params: Params, scenario: str, seed: int, k: int, granularity: str = "weight") -> dict:
    """Round k of a chain: prune round k-1 and rewind (k > 1), then train. Reads round k-1's files and writes
    round k's; nothing is written unless training finishes with finite weights."""
    from .masks import load_mask, remaining, save_mask
    from .pruning import rewind
    from .train import sgd, train_masked
    from .trainlog import TrainLog

    set_threads(params.train.threads)
    label = f"{chain(scenario, granularity)} seed {seed} round {k}"
    device = stage_device(params.train.device, label, log=False)
    p, t = params.prune, params.train
    prev, out = (round_paths(params, scenario, seed, j, granularity) for j in (k - 1, k))
    start = io.load_torch(prev.rewound)
    mask = load_mask(prev.mask)
    if k > 1:
        mask = next_mask(params, granularity, seed, io.load_torch(prev.weights), start, mask)
        start = rewind(start, mask)
    model, grow = trainable(params, granularity, build(params, seed, {n: v.clone() for n, v in start.items()}), mask)
    model = model.to(device)
    loss, gamma = scenario_loss(params, scenario, k, device)
    torch.manual_seed(round_seed(seed, k))  # dropout
    loader = train_loader(params, seed=round_seed(seed, k), device=device)
    log_device(device, label)  # once the inputs are open: a missing one fails with one line
    snapshot: dict = {}
    late = p.rewind_iteration if k == 1 and p.rewind_iteration > 0 else None

    def keep_rewind_point(step: int, m: torch.nn.Module) -> None:
        if step == late:
            snapshot.update(grow({n: v.detach().cpu().clone() for n, v in m.state_dict().items()}))

    with io.atomic_path(out.train_log, is_dir=True) as log_dir, TrainLog(log_dir) as log:
        losses = train_masked(model, mask if granularity == "weight" else {}, loader, loss, t.iterations, **sgd(t), desc=label,
                              on_step=keep_rewind_point if late else None, log=log)
    io.save_torch(out.rewound, snapshot if late else start)
    save_mask(mask, out.mask)
    io.save_torch(out.weights, grow(state_to_cpu(model.state_dict())))
    return {"gamma": gamma, "final_loss": losses[-1], "remaining": remaining(mask)}


def adopt_dense_rounds(params: Params, scenario: str, seed: int) -> None:
    """Rounds 0 and 1 of a scenario's channel ticket, taken from its weight chain with the full channel mask:
    the same W0 and the same dense round (same loss, data order and steps: byte for byte the same weights), so
    they are copied, not computed again. The layer list is checked before anything is written."""
    from .channels import full_channel_mask
    from .masks import save_mask

    weight = [round_paths(params, scenario, seed, j) for j in (0, 1)]
    model = build(params, seed, io.load_torch(weight[0].weights))
    mask = full_channel_mask(model, channel_units(params, model))
    if not weight[1].weights.is_file():   # round 0's was loaded above
        raise DataError(f"{weight[1].weights} not found; the channel ticket starts from {chain(scenario)}'s round "
                        f"1: run its stage first")
    for j, src in enumerate(weight):
        out = round_paths(params, scenario, seed, j, "channel")
        io.copy(src.weights, out.weights)
        io.copy(src.rewound, out.rewound)
        save_mask(mask, out.mask)
        if j == 1:
            io.copy(src.train_log, out.train_log)


def run_channel_chain(params: Params, scenario: str, seed: int) -> dict:
    """A scenario's channel ticket, every round in one process: rounds 0 and 1 adopted from the weight chain,
    then each later round of ``prune.rounds`` prunes channels, rewinds and trains the compact network."""
    adopt_dense_rounds(params, scenario, seed)
    rounds = [train_round(params, scenario, seed, r.k, "channel") for r in params.prune.rounds if r.k > 1]
    return {"method": chain(scenario, "channel"), "seed": seed, "remaining": [r["remaining"] for r in rounds],
            "final_loss": [r["final_loss"] for r in rounds]}


def run_chain(params: Params, scenario: str, seed: int, granularity: str = "weight") -> list[dict] | dict:
    """Alg. 1 for one scenario and seed, in this process: W0, then every round of ``prune.rounds``; a channel
    ticket after the weight chain's rounds 0 and 1 (trained here when absent)."""
    if granularity == "channel":
        if not round_paths(params, scenario, seed, 1).weights.is_file():
            init(params, scenario, seed)
            train_round(params, scenario, seed, 1)
        return run_channel_chain(params, scenario, seed)
    init(params, scenario, seed)
    return [train_round(params, scenario, seed, r.k) for r in params.prune.rounds]
