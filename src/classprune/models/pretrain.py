"""Pretraining W0's features on the synthetic source task: the offline stand-in for ImageNet.

The paper starts from ImageNet-pretrained AlexNet. Offline we learn AlexNet's conv features once on an
8-class texture/shape task (``synthetic.render_source``: lines at 4 orientations, blobs, grids, speckle,
stains; never cracks) and share them across scenarios, seeds and baselines. W0 of a seed is then those
features plus a freshly initialised, seeded 256-8-8-2 head: the "pretrain, then establish the initial
weights with a new output layer" step of open_lth's lottery runner.

The source head is a plain Linear(256, 8) on the pooled features: through the paper's 256-8-8 head with
dropout the source loss stayed at ln 8 (the 8-wide bottleneck cannot carry 8 classes early on).
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import nn

from .. import io
from ..data import synthetic
from . import registry
from .network import build_model

# Pretraining images come from ``render_source`` indices [0, n); the held-out check set starts here.
HELD_OUT_START = 10_000_000


def source_net(arch: str, seed: int, n_classes: int) -> nn.Module:
    """The network with a plain Linear(width, n_classes) head in place of the small one: its backbone learns the
    source task (AlexNet: features -> 1x1 average pool -> Linear(256, n_classes))."""
    entry = registry.get(arch)
    net = build_model("none", seed=seed, arch=arch)
    setattr(net, entry.head, nn.Linear(entry.width, n_classes))
    return net


def _to_tensor(images: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)
    return (x - mean[:, None, None]) / std[:, None, None]


def pretrain_features(out_path: str | os.PathLike | None = None, *, steps: int = 1500, batch_size: int = 32,
                      lr: float = 0.02, momentum: float = 0.9, grad_clip: float = 2.0, n_per_class: int = 800,
                      n_check_per_class: int = 50, image_size: int = 64, seed: int = 0,
                      log: Callable[[dict[str, float]], None] | None = None, arch: str = "alexnet") -> dict:
    """Train the network's backbone on the source task; save it to ``out_path`` (a backbone state_dict).

    Returns ``{"features": state_dict, "accuracy": held-out source accuracy, "final_loss", "seconds"}``;
    the state_dict's keys are the backbone's (``registry.backbone_state``: AlexNet's ``model.features``), as
    ``build_model(features=...)`` expects.
    Deterministic for a seed and torch thread count. ``log`` gets each step's loss, lr and gradient norm.
    """
    if steps < 1 or batch_size < 2 or lr <= 0 or grad_clip < 0 or n_check_per_class < 1:
        raise ValueError(f"pretraining needs steps >= 1, batch_size >= 2, lr > 0, grad_clip >= 0, "
                         f"n_check_per_class >= 1; got {steps}, {batch_size}, {lr}, {grad_clip}, {n_check_per_class}")
    start = time.perf_counter()
    images, labels = synthetic.source_set(n_per_class, image_size, seed)
    check_images, check_labels = synthetic.source_set(n_check_per_class, image_size, seed, start=HELD_OUT_START)
    # Normalised by the source pool's own channel statistics, as the target is by its train split's.
    pixels = torch.from_numpy(images).float().div_(255)
    mean, std = pixels.mean(dim=(0, 1, 2)), pixels.std(dim=(0, 1, 2))
    x, y = _to_tensor(images, mean, std), torch.from_numpy(labels)
    n_classes = len(synthetic.SOURCE_CLASSES)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = source_net(arch, seed, n_classes)
        optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
        loss_fn = nn.CrossEntropyLoss()
        order = torch.Generator().manual_seed(seed)
        batches = iter(())
        net.train()
        for step in range(steps):
            idx = next(batches, None)
            if idx is None:  # a fresh permutation per epoch
                batches = iter(torch.randperm(len(x), generator=order).split(batch_size))
                idx = next(batches)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(net(x[idx]), y[idx])
            if not torch.isfinite(loss):
                raise FloatingPointError(f"source loss became {float(loss)} at step {step}; lower pretrain.lr")
            loss.backward()
            norm = None
            if grad_clip > 0:
                norm = nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
            elif log is not None:
                norm = nn.utils.get_total_norm([p.grad for p in net.parameters() if p.grad is not None])
            optimizer.step()
            if log is not None:
                log({"loss": float(loss.detach()), "lr": lr, "grad_norm": float(norm)})
    net.eval()
    with torch.no_grad():
        xc = _to_tensor(check_images, mean, std)
        pred = torch.cat([net(b).argmax(1) for b in xc.split(256)])
    accuracy = float((pred.numpy() == check_labels).mean())
    features = registry.backbone_state(net, arch)
    if out_path is not None:
        io.save_torch(out_path, features)
    return {"features": features, "accuracy": accuracy, "final_loss": float(loss.detach()),
            "chance_loss": math.log(n_classes), "seconds": time.perf_counter() - start}


def build_w0(features: Mapping[str, torch.Tensor], seed: int, dropout: float = 0.5, arch: str = "alexnet",
             head: tuple[int, int] = (8, 8)) -> nn.Module:
    """W0 of one seed: the shared pretrained backbone + a fresh small head (width-8-8-2) initialised from ``seed``."""
    return build_model("source", seed=seed, dropout=dropout, features=features, arch=arch, head=head)


def pretrain(params) -> dict:
    """The pretrain stage: learn W0's features once on the synthetic source task (model.pretrained: source)."""
    from ..device import set_threads
    from ..paths import PRETRAIN_LOG, PRETRAINED_FEATURES
    from ..lottery.trainlog import TRAINING, TrainLog, gather

    set_threads(params.train.threads)
    p = params.pretrain
    with io.atomic_path(PRETRAIN_LOG, is_dir=True) as log_dir, TrainLog(log_dir) as log:
        result = pretrain_features(PRETRAINED_FEATURES, steps=p.steps, batch_size=p.batch_size, lr=p.lr,
                                   momentum=p.momentum, grad_clip=p.grad_clip, n_per_class=p.n_per_class,
                                   image_size=p.image_size, seed=p.seed, log=log, arch=params.model.arch)
    gather({0: PRETRAIN_LOG}, TRAINING / "pretrain.csv")
    return {k: v for k, v in result.items() if k != "features"}
