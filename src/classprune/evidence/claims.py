"""reports/evidence/hypotheses.yaml: the declared claims, and the paired per-seed values each one compares.

A claim names two arms (``a``, ``b``): scenarios (black vs red at one level), a channel ticket and its
random-reinit control (``ticket`` vs ``reinit``), or a level of a chain and the same chain's dense round
(``level`` vs ``dense``). A family is one claim on one network, granularity, scenario pair and bit set; its
members are the declared levels, and Holm's correction runs over them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import ConfigError

HYPOTHESES = Path("reports/evidence/hypotheses.yaml")
SCENARIO_ARMS = ("black", "red")


class Claim(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    says: str
    kind: Literal["direction", "noninferiority", "equivalence", "rate"]
    metric: Literal["fnr", "fpr", "auc", "accuracy", "balanced_accuracy", "constant"]
    a: Literal["black", "red", "ticket", "level"]
    b: Literal["black", "red", "reinit", "dense"]
    alternative: Literal["less", "greater"] | None = None
    margin: float | None = Field(None, gt=0)
    scenarios: tuple[str, ...] = ()
    granularities: tuple[Literal["weight", "channel"], ...]
    levels: tuple[int, ...]

    @model_validator(mode="after")
    def _consistent(self):
        pair = (self.a, self.b)
        if pair not in (("black", "red"), ("red", "black"), ("ticket", "reinit"), ("level", "dense")):
            raise ValueError(f"arms {self.a} vs {self.b}: expected black vs red, ticket vs reinit or level vs dense")
        if (self.kind in ("direction", "rate")) != (self.alternative is not None):
            raise ValueError("direction and rate claims take an alternative (less or greater), the others none")
        if (self.kind in ("noninferiority", "equivalence")) != (self.margin is not None):
            raise ValueError("noninferiority and equivalence claims take a margin, the others none")
        if (self.a in SCENARIO_ARMS) == bool(self.scenarios):
            raise ValueError("scenarios are for ticket-vs-reinit and level-vs-dense claims only")
        if self.a == "ticket" and self.granularities != ("channel",):
            raise ValueError("a random-reinit control exists for channel tickets only")
        return self

    def families(self) -> list[tuple[str, str]]:
        """(granularity, scenario) of every family of this claim on one network and bit set."""
        scenarios = self.scenarios or (f"{self.a}-{self.b}",)
        return [(g, s) for g in self.granularities for s in scenarios]

    def arms(self, granularity: str, scenario: str, level: int) -> tuple[tuple[str, int], tuple[str, int]]:
        """((method, round) of a, (method, round) of b) in a rounds table."""
        def method(name: str) -> str:
            return name if granularity == "weight" else f"{name}-channel"

        if self.a in SCENARIO_ARMS:
            return (method(self.a), level), (method(self.b), level)
        if self.a == "ticket":
            return (method(scenario), level), (f"{scenario}-channel-reinit", level)
        return (method(scenario), level), (method(scenario), 1)


class Hypotheses(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    alpha: float = Field(gt=0, lt=1)
    confidence: float = Field(gt=0, lt=1)
    split: Literal["val", "test"]
    power: float = Field(gt=0, lt=1)
    networks: dict[str, dict[str, str]]
    claims: tuple[Claim, ...]

    @model_validator(mode="after")
    def _unique(self):
        ids = [c.id for c in self.claims]
        if len(set(ids)) != len(ids):
            raise ValueError(f"claim ids must be unique: {ids}")
        return self

    def sources(self, root: Path = Path(".")) -> dict[tuple[str, str], Path]:
        """{(network, bits): rounds.csv} of the result sets (the pilot is not one)."""
        return {(net, bits): root / path for net, by_bits in self.networks.items()
                for bits, path in by_bits.items() if bits != "pilot"}


def load(path: str | Path = HYPOTHESES) -> Hypotheses:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"hypotheses file not found: {path}")
    try:
        return Hypotheses.model_validate(yaml.safe_load(path.read_text()) or {})
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not YAML: {str(exc).splitlines()[0]}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"{path}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


def paired(rounds: pd.DataFrame, split: str, metric: str, arm_a: tuple[str, int], arm_b: tuple[str, int]) -> pd.DataFrame:
    """One row per seed present in both arms: seed, a, b (the metric), remaining (a's), constant_a/b and
    dead_a/b (a constant predictor; one score for every image), seed-sorted."""
    rows = rounds[rounds["split"] == split]

    def arm(method: str, level: int, tag: str) -> pd.DataFrame:
        sel = rows[(rows["method"] == method) & (rows["round"] == level)]
        return pd.DataFrame({"seed": sel["seed"].to_numpy(), tag: sel[metric].astype(float).to_numpy(),
                             f"remaining_{tag}": sel["remaining"].to_numpy(),
                             f"constant_{tag}": sel["constant"].astype(bool).to_numpy(),
                             f"dead_{tag}": sel["score_constant"].astype(bool).to_numpy()})

    out = arm(*arm_a, "a").merge(arm(*arm_b, "b"), on="seed", how="inner")
    return out.sort_values("seed").reset_index(drop=True)
