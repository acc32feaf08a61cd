"""Typed params.yaml: every knob validated on load, errors as one line naming the key and allowed values."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .baselines.config import Baselines
from .constants import DEVICE_PATTERN
from .errors import ConfigError
from .prune_config import Prune, resolve_output
from .scenarios import SCENARIOS, Scenario

DEFAULT_PARAMS = Path("params.yaml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EvalOnly(_Strict):  # images for val and test only, rendered after the others: train stays as it is
    n_positive: int = Field(0, ge=0)
    n_negative: int = Field(0, ge=0)


class Synthetic(_Strict):
    n_positive: int = Field(600, ge=1)
    n_negative: int = Field(3000, ge=1)
    image_size: int = Field(64, ge=16)
    seed: int = 0
    eval_only: EvalOnly = EvalOnly()


class Isic(_Strict):
    train_images: str = "data/raw/ISIC/ISBI2016_ISIC_Part3_Training_Data"
    train_csv: str = "data/raw/ISIC/ISBI2016_ISIC_Part3_Training_GroundTruth.csv"
    test_images: str = "data/raw/ISIC/ISBI2016_ISIC_Part3_Test_Data"
    test_csv: str = "data/raw/ISIC/ISBI2016_ISIC_Part3_Test_GroundTruth.csv"


class Data(_Strict):
    source: Literal["synthetic", "crack", "isic", "folder"] = "synthetic"
    root: str = "data/raw"
    positive_class: str = "Positive"
    synthetic: Synthetic = Synthetic()
    isic: Isic = Isic()
    n_negative: int = Field(3000, ge=1)
    n_positive: int = Field(600, ge=1)
    take_all: bool = False
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    val_fraction: float = Field(0.15, gt=0, lt=1)
    split_seed: int = 0
    image_size: int = Field(64, ge=1)  # at least model.arch's minimum (the registry's)
    augment: Literal["none", "crack", "isic"] = "crack"
    normalize: Literal["train", "imagenet"] = "train"
    workers: int = Field(0, ge=0)  # processes generating / decoding images (0: all cores); output independent of it

    @field_validator("fractions")
    @classmethod
    def _sum_to_one(cls, v):
        if any(f <= 0 for f in v) or abs(sum(v) - 1.0) > 1e-6:
            raise ValueError("must be three positive numbers summing to 1")
        return v


class ModelCfg(_Strict):
    arch: str = "alexnet"  # the network (classprune.models.registry): alexnet | resnet18 | mobilenet_v2
    head: list[int] = Field([8, 8], min_length=2, max_length=2)  # widths of the small head's hidden layers
    # source: features pretrained on the synthetic source task (the pretrain stage) + a seeded fresh head
    pretrained: Literal["source", "none", "imagenet"] = "source"
    dropout: float = Field(0.0, ge=0, lt=1)

    @field_validator("head")
    @classmethod
    def _positive_widths(cls, v: list[int]) -> list[int]:
        if any(w < 1 for w in v):
            raise ValueError(f"head widths must be >= 1, got {v}")
        return v

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, v: str) -> str:
        from .models.registry import get

        get(v)
        return v


class Pretrain(_Strict):  # source-task pretraining of W0's features (used when model.pretrained is source)
    steps: int = Field(1500, ge=1)
    batch_size: int = Field(32, ge=2)
    lr: float = Field(0.02, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    grad_clip: float = Field(2.0, ge=0)
    n_per_class: int = Field(800, ge=1)   # source images per class (8 classes)
    image_size: int = Field(64, ge=1)  # at least model.arch's minimum
    seed: int = 0


class Train(_Strict):
    lr: float = Field(0.02, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(2.0, ge=0)  # max gradient norm; 0 disables
    batch_size: int = Field(32, ge=2)
    iterations: int = Field(200, ge=1)
    # constant: lr every step (the paper's); cosine: linear warm-up over `warmup` steps, then cosine to 0
    schedule: Literal["constant", "cosine"] = "cosine"
    warmup: int = Field(20, ge=0)
    threads: int = Field(1, ge=0)  # 0: torch's default
    loader_workers: int = Field(1, ge=0)  # processes for training augmentation (per-image transforms)
    margin: float = Field(1.0, gt=0)
    # kernels' instruction set, pinned before torch starts (classprune.isa): avx2 equal bits on AVX-512 and AVX2
    cpu_isa: Literal["native", "avx2"] = "avx2"
    # auto: cuda when torch sees a GPU, else cpu; cuda without a GPU is an error at the stage (device.py)
    device: str = "auto"

    @model_validator(mode="after")
    def _warmup_fits(self):
        if self.warmup >= self.iterations:
            raise ValueError(f"train.warmup ({self.warmup}) must be below train.iterations ({self.iterations})")
        return self

    @field_validator("device")
    @classmethod
    def _device_name(cls, v):
        if not re.fullmatch(DEVICE_PATTERN, v):
            raise ValueError("must be auto, cpu, cuda or cuda:N")
        return v


class Evaluate(_Strict):  # evaluation only: changing it reruns the evaluate stages, never training
    batch_size: int = Field(256, ge=1)
    target_fnr: float = Field(0.05, ge=0, lt=1)  # operating point: highest threshold with val FNR <= this
    fnr_confidence: float = Field(0.95, gt=0, lt=1)  # one-sided exact binomial upper bounds on FNR
    threshold_rule: Literal["point", "bound"] = "point"  # what must meet target_fnr on val: FNR or its bound


class Run(_Strict):
    scenarios: list[str] = ["red", "blue", "black", "green"]  # weight tickets
    # channel tickets (prune.channel) beside the weight ones; unset means none (params.yaml opts in)
    channel_scenarios: list[str] = []
    seeds: list[int] = [0, 1, 2, 3, 4]

    @field_validator("scenarios", "channel_scenarios")
    @classmethod
    def _distinct(cls, v):
        if len(set(v)) != len(v):
            raise ValueError(f"names a scenario twice: {v}")
        return v

    @field_validator("seeds")
    @classmethod
    def _unique(cls, v):
        if not v or len(set(v)) != len(v) or min(v) < 0:
            raise ValueError("needs at least one seed; seeds must be unique and >= 0")
        return v


class Report(_Strict):
    fn_margin: float = Field(0.02, ge=0)
    split: Literal["val", "test"] = "test"


class Export(_Strict):  # the edge files: which precisions, how int8 is calibrated
    precisions: list[Literal["fp32", "fp16", "int8"]] = ["fp32", "fp16", "int8"]
    calibration_per_class: int = Field(64, ge=1)  # train images per class for int8 calibration
    seed: int = 0
    # 7-bit int8 weights, so that a file scores the same on CPUs with and without VNNI (experiments/int8_cpu.py)
    int8_reduce_range: bool = True

    @field_validator("precisions")
    @classmethod
    def _fp32_first(cls, v: list[str]) -> list[str]:  # fp32 is the reference the others are checked against
        if v[:1] != ["fp32"] or len(set(v)) != len(v):
            raise ValueError("export.precisions must start with fp32 and name each precision once")
        return v


class Params(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())
    profile: str = "embedded"
    data: Data = Data()
    model: ModelCfg = ModelCfg()
    pretrain: Pretrain = Pretrain()
    train: Train = Train()
    prune: Prune
    scenarios: dict[str, Scenario] = dict(SCENARIOS)
    run: Run = Run()
    evaluate: Evaluate = Evaluate()
    report: Report = Report()
    export: Export = Export()
    baselines: Baselines = Baselines()

    @model_validator(mode="before")
    @classmethod
    def _output_layer_by_name(cls, data):
        return resolve_output(data)

    @field_validator("scenarios")
    @classmethod
    def _names(cls, v):
        bad = [n for n in v if not re.fullmatch(r"[a-z][a-z0-9_]*", n) or n.startswith("seed_")]
        if bad:
            raise ValueError(f"scenario names must be lower-case identifiers not starting with seed_, got {bad}")
        return v

    @model_validator(mode="after")
    def _scenarios_defined(self):
        for key in ("scenarios", "channel_scenarios"):
            unknown = [s for s in getattr(self.run, key) if s not in self.scenarios]
            if unknown:
                raise ValueError(f"run.{key} names unknown scenario(s) {unknown}; defined: {sorted(self.scenarios)}")
        if missing := [s for s in self.run.channel_scenarios if s not in self.run.scenarios]:
            raise ValueError(f"run.channel_scenarios {missing} must also be in run.scenarios: a channel ticket starts "
                             f"from its weight chain's rounds 0 and 1")
        return self

    @model_validator(mode="after")
    def _fits_the_network_and_training(self):
        # images must survive its strides and pools, the sparsest round must keep one weight per prunable tensor,
        # and a late rewind point must lie inside round 1
        from .models.registry import get, prunable_size

        if self.prune.rewind_iteration >= self.train.iterations:
            raise ValueError(f"prune.rewind_iteration ({self.prune.rewind_iteration}) must be below "
                             f"train.iterations ({self.train.iterations})")

        arch = self.model.arch
        for key, size in (("data.image_size", self.data.image_size), ("pretrain.image_size", self.pretrain.image_size)):
            if size < (least := get(arch).min_image_size):
                raise ValueError(f"{key} {size} is below {arch}'s minimum of {least} px (its strides and pools)")
        elements, tensors = prunable_size(arch, tuple(self.model.head))
        if (left := elements * (1 - self.prune.rate) ** (self.prune.n_rounds - 1)) < tensors:
            raise ValueError(f"prune: {self.prune.n_rounds} rounds at rate {self.prune.rate} leave {left:.1f} of "
                             f"{arch}'s weights, fewer than its {tensors} prunable tensors; use fewer rounds or a lower rate")
        return self

    @model_validator(mode="after")
    def _baselines_consistent(self):
        from .models.registry import get

        b = self.baselines
        if "lobs" in b.methods and get(self.model.arch).depthwise:
            raise ValueError(f"baselines.methods: lobs does not apply to {self.model.arch}: its depthwise convs read one "
                             "input channel per filter, and L-OBS's layer-wise Hessian assumes one input space per layer")
        if b.methods and b.source_scenario not in self.run.scenarios:
            raise ValueError(f"baselines.source_scenario {b.source_scenario!r} must be one of run.scenarios "
                             f"{self.run.scenarios} (its round 0 and 1 feed the baselines)")
        if b.snip_trained.loss != "ce" and b.snip_trained.loss not in self.scenarios:
            raise ValueError(f"baselines.snip_trained.loss must be ce or a scenario name, got {b.snip_trained.loss!r}")
        if clash := sorted(set(b.methods) & set(self.run.scenarios)):
            raise ValueError(f"scenario name(s) {clash} clash with baseline methods (both write reports/rounds)")
        return self

    def channel_rate(self) -> float:
        """Channels pruned per round: prune.channel.rate, or the rate at which weights shrink as prune.rate's
        (a middle conv layer loses input and output channels alike: (1 - p)^2 of its weights remain)."""
        c = self.prune.channel
        return c.rate if c.rate is not None else 1.0 - (1.0 - self.prune.rate) ** 0.5

    def check_seed(self, seed: int) -> None:
        if seed not in self.run.seeds:
            raise ConfigError(f"seed {seed} is not in run.seeds ({self.run.seeds}); `classprune seeds` drops it")


def _format(err: ValidationError, path: Path) -> str:
    e = err.errors()[0]
    key, msg = ".".join(str(p) for p in e["loc"]) or "(top level)", e["msg"].removeprefix("Value error, ")
    extra = f" ({len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    got = f", got {e['input']!r}" if "input" in e and not isinstance(e["input"], (dict, list)) else ""
    return f"{path}: {key}: {msg}{got}{extra}"


def load_train(path: str | Path = DEFAULT_PARAMS) -> Train:
    """params.yaml's ``train`` alone, config's defaults where missing: what the flows need, no full file."""
    path = Path(path)
    raw = (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
    try:
        return Train.model_validate(raw.get("train") or {})
    except ValidationError as exc:
        raise ConfigError(_format(exc, path).replace(f"{path}: ", f"{path}: train.", 1)) from None


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format(exc, path)) from None
