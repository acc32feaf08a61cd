"""The ``prune`` section of params.yaml: the weight tickets' rule and rounds, and the channel tickets'.

A leaf like classprune.config (no torch), kept apart so that config stays short.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .constants import CHANNEL_CRITERIA, LT_CRITERIA


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Round(_Strict):
    k: int = Field(ge=1)
    prev: int = Field(ge=0)


def known_criterion(v: str, allowed) -> str:
    if v not in allowed:
        raise ValueError(f"unknown criterion {v!r}; allowed: {', '.join(allowed)}")
    return v


class Channel(_Strict):
    """Channel tickets (granularity channel): a conv output channel, its bias and every slice reading it."""
    criterion: str = "l1"
    scope: Literal["layerwise", "global"] = "layerwise"
    # channels pruned per round; None: 1 - sqrt(1 - prune.rate), so that weights shrink as fast as prune.rate's
    rate: float | None = Field(None, gt=0, lt=1)
    layers: Literal["conv"] | list[str] = "conv"  # conv: every Conv2d; else the layers' module names

    @field_validator("criterion")
    @classmethod
    def _known_criterion(cls, v):
        return known_criterion(v, CHANNEL_CRITERIA)

    @field_validator("layers")
    @classmethod
    def _some_layers(cls, v):
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError("must be conv or a non-empty list of distinct conv layer names")
        return v


OUTPUT = "output"  # prune.ignore / layer_rates: the output layer of model.arch (Params resolves it)


class Prune(_Strict):
    channel: Channel = Channel()  # the channel tickets of run.channel_scenarios
    rate: float = Field(0.5, gt=0, lt=1)
    scope: Literal["layerwise", "global"] = "global"
    criterion: str = "magnitude"
    include_biases: bool = False
    # tensors never pruned (open_lth's pruning_layers_to_ignore); "output": the network's 8 -> 2 output weight
    ignore: list[str] = [OUTPUT]
    # tensors pruned at their own rate, each on its own (Frankle & Carbin: the output layer at half the rate)
    layer_rates: dict[str, float] = {}
    rewind_iteration: int = Field(0, ge=0)  # late rewinding: rewind to the weights after this many round-1 steps
    rounds: list[Round]

    @field_validator("criterion")
    @classmethod
    def _known_criterion(cls, v):
        return known_criterion(v, LT_CRITERIA)

    @field_validator("layer_rates")
    @classmethod
    def _rates(cls, v):
        bad = {n: r for n, r in v.items() if not 0 < r < 1}
        if bad:
            raise ValueError(f"every rate must be in (0, 1), got {bad}")
        return v

    @model_validator(mode="after")
    def _ignored_not_rated(self):
        both = sorted(set(self.ignore) & set(self.layer_rates))
        if both:
            raise ValueError(f"{both} are both ignored and given a rate; name each tensor in one of them")
        return self

    @field_validator("rounds")
    @classmethod
    def _consecutive(cls, v):
        # dvc.yaml cannot do arithmetic, so the previous round is spelled out; it must be consistent.
        if not v or [(r.k, r.prev) for r in v] != [(i, i - 1) for i in range(1, len(v) + 1)]:
            raise ValueError("must list {k: 1, prev: 0}, {k: 2, prev: 1}, ... in order")
        return v

    @property
    def n_rounds(self) -> int:
        return len(self.rounds)


def resolve_output(data):
    """Raw params with ``output`` in prune.ignore / prune.layer_rates (and prune.ignore's default) replaced by
    the network's 8 -> 2 output weight, the registry's ``output_layer`` (classifier.6.weight in AlexNet,
    fc.6.weight in ResNet-18), so that a default follows model.arch."""
    from .models.registry import get

    if not isinstance(data, dict) or not isinstance(data.get("prune"), dict):
        return data
    model = data.get("model")
    arch = model.get("arch", "alexnet") if isinstance(model, dict) else getattr(model, "arch", "alexnet")
    try:
        out = get(arch).output_layer
    except ValueError:
        return data   # the arch check says it in one line
    prune = {"ignore": [OUTPUT], **data["prune"]}
    if isinstance(prune.get("ignore"), list):
        prune["ignore"] = [out if n == OUTPUT else n for n in prune["ignore"]]
    if isinstance(prune.get("layer_rates"), dict):
        prune["layer_rates"] = {out if n == OUTPUT else n: r for n, r in prune["layer_rates"].items()}
    return {**data, "prune": prune}
