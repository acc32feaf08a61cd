"""Where every artifact lives: the artifact contract in one place, relative to the project root.

``models/<chain>/seed_<s>/round_<k>/`` holds ``mask.pt`` (the mask round k trains with), ``rewound.pt``
(the rewind point masked by that mask: the weights round k starts from) and ``weights.pt`` (trained).
``round_0`` holds W0 as ``weights.pt`` and ``rewound.pt`` and the all-ones mask. A trained round also holds
``train/``, its DVCLive training curves. A chain is a scenario's weight ticket (``<scenario>``) or its
channel ticket (``<scenario>-channel``; a scenario name cannot hold ``-``, so the two never clash).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Params

PREPARED = Path("data/prepared")
SPLITS = Path("data/splits")
CACHE = Path("data/cache")
ROUNDS = Path("reports/rounds")
SCORES = Path("reports/scores")
MODELS = Path("models")
PRETRAINED_FEATURES = Path("models/pretrained/features.pt")
PRETRAIN_LOG = Path("models/pretrained/train")  # its DVCLive training curves


@dataclass(frozen=True)
class RoundPaths:
    dir: Path

    @property
    def weights(self) -> Path:
        return self.dir / "weights.pt"

    @property
    def mask(self) -> Path:
        return self.dir / "mask.pt"

    @property
    def rewound(self) -> Path:
        return self.dir / "rewound.pt"

    @property
    def train_log(self) -> Path:
        """The round's DVCLive directory: per-step training curves (classprune.lottery.trainlog)."""
        return self.dir / "train"


GRANULARITIES = ("weight", "channel")


def chain(scenario: str, granularity: str = "weight") -> str:
    """The chain's name: its model folder and its method in the reports."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    return scenario if granularity == "weight" else f"{scenario}-{granularity}"


def reinit_method(scenario: str) -> str:
    """The random-reinit control of a scenario's channel ticket (Liu et al. 2019)."""
    return f"{chain(scenario, 'channel')}-reinit"


def round_paths(params: Params, scenario: str, seed: int, k: int, granularity: str = "weight") -> RoundPaths:
    params.check_seed(seed)
    return RoundPaths(MODELS / chain(scenario, granularity) / f"seed_{seed}" / f"round_{k}")


def metrics_path(method: str, seed: int) -> Path:
    """One result file per (method, seed): every round of an LT chain, or every level of a baseline."""
    return ROUNDS / f"seed_{seed}" / f"{method}.json"


def scores_path(method: str, seed: int) -> Path:
    """The val and test scores of every round or level of a result file (for ROC and PR curves)."""
    return SCORES / f"seed_{seed}" / f"{method}.npz"


def declared_results(params: Params) -> list[Path]:
    """The result files the current dvc.yaml and params.yaml produce: what the report reads, nothing else."""
    channel = params.run.channel_scenarios
    methods = [*params.run.scenarios, *params.baselines.methods, *(chain(s, "channel") for s in channel),
               *(reinit_method(s) for s in channel)]
    return [metrics_path(m, s) for s in params.run.seeds for m in methods]
