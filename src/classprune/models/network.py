"""AlexNet-256-8-8-2 of the paper: torchvision's AlexNet features, a 1x1 avgpool and a tiny classifier.

The small head keeps iterative pruning affordable; the conv features are torchvision's own, so ImageNet
weights load into them unchanged.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError

# source: features pretrained on the synthetic source task (classprune.models.pretrain), the offline stand-in for
# ImageNet; imagenet: torchvision's weights; none: a plain seeded init.
PRETRAINED = ("source", "none", "imagenet")


def build_model(pretrained: str = "none", seed: int = 0, hidden: tuple[int, int, int] = (256, 8, 8),
                num_classes: int = 2, dropout: float = 0.5,
                features: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
    """The paper's network; ``seed`` fixes the random init of everything not pretrained.

    ``pretrained="source"`` needs ``features``: the conv state_dict from ``classprune.models.pretrain``.
    """
    from torchvision.models import alexnet

    if pretrained not in PRETRAINED:
        raise ValueError(f"pretrained must be one of {PRETRAINED}, got {pretrained!r}")
    if (pretrained == "source") != (features is not None):
        raise ValueError("features are given with pretrained='source' and only then "
                         f"(pretrained={pretrained!r}, features {'given' if features is not None else 'missing'})")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = alexnet(weights=None)
        model.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        a, b, c = hidden
        model.classifier = nn.Sequential(
            nn.Dropout(p=dropout), nn.Linear(a, b), nn.ReLU(inplace=True),
            nn.Dropout(p=dropout), nn.Linear(b, c), nn.ReLU(inplace=True),
            nn.Linear(c, num_classes),
        )
    if pretrained == "imagenet":
        model.features.load_state_dict(_imagenet_features())
    elif pretrained == "source":
        try:
            model.features.load_state_dict(dict(features))
        except RuntimeError as exc:
            raise CheckpointError(f"pretrained features do not fit AlexNet's: {str(exc).splitlines()[0]}") from None
    return model


def _imagenet_features() -> dict[str, torch.Tensor]:
    """ImageNet conv weights from the torch hub cache, or a download when the network allows it."""
    from torch.hub import get_dir, load_state_dict_from_url
    from torchvision.models import AlexNet_Weights

    url = AlexNet_Weights.IMAGENET1K_V1.url
    ckpt_dir = Path(get_dir()) / "checkpoints"
    target = ckpt_dir / os.path.basename(url)
    try:
        if target.is_file():
            state = torch.load(target, map_location="cpu", weights_only=True)
        else:
            state = load_state_dict_from_url(url, model_dir=str(ckpt_dir), map_location="cpu",
                                             progress=False, check_hash=True)
    except Exception as exc:  # noqa: BLE001 - any failure means "weights not available"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"ImageNet weights for AlexNet not available: put {target.name} into {ckpt_dir} "
            f"(or set TORCH_HOME), or use model.pretrained: none ({reason})") from None
    return {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def positive_score(logits: torch.Tensor) -> torch.Tensor:
    """Log-odds of the positive class: the score that AUC and the ranking loss rank by."""
    return logits[:, 1] - logits[:, 0]
