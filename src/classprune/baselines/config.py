"""The ``baselines`` section of params.yaml: one block per method, so DVC reruns only the method that changed.

A leaf like classprune.config (no torch): config validates the methods against the registry's names.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..scenarios import GammaValue


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SnipCfg(_Strict):
    batches: int = Field(4, ge=1)  # training batches averaged into the connection sensitivity


class SnipTrainedCfg(SnipCfg):
    loss: str = "ce"  # ce: plain cross-entropy (the paper's); or a scenario name: its loss of round k


class LobsCfg(_Strict):
    batches: int = Field(4, ge=1)  # training batches whose layer inputs form the Hessians
    damp: float = Field(0.01, gt=0)  # (H + damp * mean(diag H) I)^-1: H is rank-deficient on few batches
    block_mb: int = Field(256, ge=1)  # memory budget of one block of per-row OBS solves


class MobileNetCfg(_Strict):
    # The class-dependent loss it trains with (default: the black scenario's later rounds). Its own values,
    # not a scenario reference, so tuning a scenario does not rerun the baselines.
    gamma: GammaValue = 5.0
    lam: float = Field(5.0, ge=0)
    arch: Literal["mobilenet_v3_small", "mobilenet_v2"] = "mobilenet_v3_small"


class Baselines(_Strict):
    """Comparison methods of the paper; one block per method so DVC reruns only the one that changed."""

    methods: list[str] = ["snip", "snip_trained", "lobs", "mobilenet"]
    source_scenario: str = "red"  # its round_0 W0 feeds SNIP, its dense round-1 weights feed L-OBS
    snip: SnipCfg = SnipCfg()
    snip_trained: SnipTrainedCfg = SnipTrainedCfg()
    lobs: LobsCfg = LobsCfg()
    mobilenet: MobileNetCfg = MobileNetCfg()

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, v):
        from .registry import METHODS  # names only, no torch

        unknown = [m for m in v if m not in METHODS]
        if unknown or len(set(v)) != len(v):
            raise ValueError(f"unknown or repeated method(s) {unknown or v}; allowed: {', '.join(sorted(METHODS))}")
        return v
