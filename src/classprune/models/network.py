"""The network of a run (``model.arch``, classprune.models.registry) with its weights: W0 before pruning.

The paper's is AlexNet-256-8-8-2: torchvision's AlexNet features, a 1x1 avgpool and a tiny classifier. The
small head keeps iterative pruning affordable; the backbone is torchvision's own, so ImageNet weights load
into it unchanged.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError
from . import registry

# source: features pretrained on the synthetic source task (classprune.models.pretrain), the offline stand-in for
# ImageNet; imagenet: torchvision's weights; none: a plain seeded init.
PRETRAINED = ("source", "none", "imagenet")


def build_model(pretrained: str = "none", seed: int = 0, num_classes: int = 2, dropout: float = 0.5,
                features: Mapping[str, torch.Tensor] | None = None, arch: str = "alexnet",
                head: tuple[int, int] = (8, 8)) -> nn.Module:
    """The network; ``seed`` fixes the random init of everything not pretrained.

    ``pretrained="source"`` needs ``features``: the backbone state from ``classprune.models.pretrain``.
    """
    if pretrained not in PRETRAINED:
        raise ValueError(f"pretrained must be one of {PRETRAINED}, got {pretrained!r}")
    if (pretrained == "source") != (features is not None):
        raise ValueError("features are given with pretrained='source' and only then "
                         f"(pretrained={pretrained!r}, features {'given' if features is not None else 'missing'})")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = registry.build(arch, tuple(head), num_classes=num_classes, dropout=dropout)
    weights = _imagenet_state(arch) if pretrained == "imagenet" else features
    if weights is not None:
        try:
            registry.load_backbone(model, arch, dict(weights))
        except RuntimeError as exc:
            raise CheckpointError(f"{pretrained} weights do not fit {arch}'s: {str(exc).splitlines()[0]}") from None
    return model


def _imagenet_state(arch: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights from the torch hub cache, or a download when the network allows it."""
    from torch.hub import get_dir, load_state_dict_from_url

    url = registry.imagenet_url(arch)
    ckpt_dir = Path(get_dir()) / "checkpoints"
    target = ckpt_dir / os.path.basename(url)
    try:
        if target.is_file():
            return torch.load(target, map_location="cpu", weights_only=True)
        return load_state_dict_from_url(url, model_dir=str(ckpt_dir), map_location="cpu", progress=False,
                                        check_hash=True)
    except Exception as exc:  # noqa: BLE001 - any failure means "weights not available"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"ImageNet weights for {arch} not available: put {target.name} into {ckpt_dir} "
            f"(or set TORCH_HOME), or use model.pretrained: none ({reason})") from None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv_layers(arch: str = "alexnet", head: tuple[int, int] = (8, 8)) -> list[str]:
    """The network's Conv2d module names: its backbone's layers, whose kept W0 magnitude the report shows."""
    with torch.device("meta"):
        return [n for n, m in registry.build(arch, tuple(head)).named_modules() if isinstance(m, nn.Conv2d)]


def dense_parameters(arch: str = "alexnet", head: tuple[int, int] = (8, 8)) -> int:
    """Parameters of the unpruned network (counted on the meta device: nothing allocated)."""
    with torch.device("meta"):
        return count_parameters(registry.build(arch, tuple(head)))


def positive_score(logits: torch.Tensor) -> torch.Tensor:
    """Log-odds of the positive class: the score that AUC and the ranking loss rank by."""
    return logits[:, 1] - logits[:, 0]
