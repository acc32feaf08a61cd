"""The paper's scenarios (Sec. III-C) as named parameter sets; params.yaml may override them or add more."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

GammaValue = float | list[float] | dict[Literal["beta"], float]


class Scenario(BaseModel):
    """gamma: a number weights the positive class (negatives 1), a list weights every class,
    ``{beta: b}`` uses the effective number of samples (Cui et al. 2019)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    gamma_first: GammaValue = 1.0
    gamma_rest: GammaValue = 1.0
    lam: float = Field(0.0, ge=0)
    color: str = "grey"
    label: str = ""

    @field_validator("gamma_first", "gamma_rest")
    @classmethod
    def _gamma_ok(cls, v):
        if isinstance(v, dict):
            if not 0 <= v["beta"] < 1:
                raise ValueError(f"beta must be in [0, 1), got {v['beta']}")
        elif any(g < 0 for g in (v if isinstance(v, list) else [v])):
            raise ValueError(f"gamma must be non-negative, got {v}")
        return v


SCENARIOS: dict[str, Scenario] = {
    "red": Scenario(gamma_first=1, gamma_rest=1, lam=0, color="red", label="LT (gamma 1, lambda 0)"),
    "blue": Scenario(gamma_first=1, gamma_rest=1, lam=5, color="blue", label="ranking (gamma 1, lambda 5)"),
    "black": Scenario(gamma_first=1, gamma_rest=5, lam=5, color="black", label="gamma 1 then 5, lambda 5"),
    "green": Scenario(gamma_first=10, gamma_rest=10, lam=5, color="green", label="gamma 10, lambda 5"),
}
