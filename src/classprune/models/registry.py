"""The networks the pipeline prunes, by name (``model.arch``), as open_lth's models/registry: a new network is
one entry. Each is torchvision's own network with the paper's small head (pooled features -> 8 -> 8 -> 2)
in place of its classifier, so that torchvision's (ImageNet) weights load into everything but the head.

Importing this module imports no torch: params validation (classprune.config) reads the names.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class Arch:
    """What the pipeline needs to know of a network, and nothing it can read from the network itself."""

    builder: str          # torchvision.models function
    weights: str          # its torchvision weights enum (ImageNet), e.g. AlexNet_Weights
    head: str             # the attribute its classifier lives in: the small head replaces it
    width: int            # pooled feature width: the head's input
    min_image_size: int   # smallest input its strides and pools survive
    batch_norm: bool      # BN layers: never pruned, rewound with their running statistics
    prunable: tuple[int, int]  # the backbone's Conv2d/Linear weights and biases: (elements, tensors)
    backbone: str | None = None  # the submodule the source task pretrains and saves; None: all but the head
    depthwise: bool = False  # depthwise convs: one input space per channel, so L-OBS's one Hessian per layer does not apply

    @property
    def output_layer(self) -> str:
        """The 8 -> 2 output weight: never pruned by default (open_lth's pruning_layers_to_ignore)."""
        return f"{self.head}.6.weight"


ARCHS: dict[str, Arch] = {
    # the paper's AlexNet-256-8-8-2: torchvision's features, a 1x1 average pool (torchvision's is 6x6)
    "alexnet": Arch("alexnet", "AlexNet_Weights", "classifier", 256, 63, batch_norm=False,
                    prunable=(2_469_696, 10), backbone="features"),
    "resnet18": Arch("resnet18", "ResNet18_Weights", "fc", 512, 32, batch_norm=True, prunable=(11_166_912, 20)),
    "mobilenet_v2": Arch("mobilenet_v2", "MobileNet_V2_Weights", "classifier", 1280, 32, batch_norm=True,
                         prunable=(2_189_760, 52), depthwise=True),
}


def get(name: str) -> Arch:
    if name not in ARCHS:
        raise ValueError(f"model.arch must be one of {', '.join(ARCHS)}, got {name!r}")
    return ARCHS[name]


def prunable_size(name: str, hidden: tuple[int, int] = (8, 8), num_classes: int = 2) -> tuple[int, int]:
    """(elements, tensors) a weight ticket may prune: the backbone's from the entry, the head's counted, so that
    params validation needs no torch (tests/test_archs.py checks it against the built network)."""
    b, c = hidden
    widths = (get(name).width, b, c, num_classes)
    elements, tensors = get(name).prunable
    return elements + sum((i + 1) * o for i, o in pairwise(widths)), tensors + 6


def head(width: int, hidden: tuple[int, int], num_classes: int, dropout: float) -> nn.Module:
    """The paper's head on pooled features: width -> 8 -> 8 -> classes (the output layer is index 6)."""
    from torch import nn

    b, c = hidden
    return nn.Sequential(nn.Dropout(p=dropout), nn.Linear(width, b), nn.ReLU(inplace=True),
                         nn.Dropout(p=dropout), nn.Linear(b, c), nn.ReLU(inplace=True), nn.Linear(c, num_classes))


def build(name: str, hidden: tuple[int, int] = (8, 8), num_classes: int = 2, dropout: float = 0.5) -> nn.Module:
    """The network with torchvision's default random init and the small head, drawn from torch's current RNG
    (the caller seeds it); the head's modules are created last, so the backbone's init does not depend on it."""
    import torchvision.models as tvm
    from torch import nn

    arch = get(name)
    model = getattr(tvm, arch.builder)(weights=None)
    if name == "alexnet":
        model.avgpool = nn.AdaptiveAvgPool2d((1, 1))
    setattr(model, arch.head, head(arch.width, hidden, num_classes, dropout))
    return model


def backbone_state(model: nn.Module, name: str) -> dict:
    """The pretrained part's state (every tensor but the head's; AlexNet's: its ``features`` module's)."""
    arch = get(name)
    if arch.backbone:
        return {k: v.detach().clone() for k, v in model.get_submodule(arch.backbone).state_dict().items()}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith(arch.head + ".")}


def load_backbone(model: nn.Module, name: str, state: dict) -> None:
    """Load :func:`backbone_state` output (or a full torchvision state: its head's entries are skipped)."""
    arch = get(name)
    if arch.backbone:
        prefix = arch.backbone + "."
        if any(k.startswith(prefix) for k in state):   # a full torchvision state
            state = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        model.get_submodule(arch.backbone).load_state_dict(state)
        return
    head = arch.head + "."
    missing, unexpected = model.load_state_dict({k: v for k, v in state.items() if not k.startswith(head)},
                                                strict=False)
    if [k for k in missing if not k.startswith(head)] or unexpected:
        raise RuntimeError(f"missing {[k for k in missing if not k.startswith(head)][:3]}, unexpected {unexpected[:3]}")


def imagenet_url(name: str) -> str:
    import torchvision.models as tvm

    return getattr(tvm, get(name).weights).IMAGENET1K_V1.url
