"""Where tensors live: ``train.device`` (auto | cpu | cuda | cuda:N) resolved once per stage.

Artifacts never depend on it: checkpoints are saved from CPU tensors and loaded to the CPU first.
"""
from __future__ import annotations

import os
import re
import sys

import torch

from .constants import DEVICE_PATTERN
from .errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` is the first GPU when torch sees one, else the CPU; asking for a GPU that is not there is a
    one-line error (rather than torch's long CUDA traceback deep inside a stage)."""
    name = str(name).strip().lower()
    if not re.fullmatch(DEVICE_PATTERN, name):
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device is {name!r} but torch sees no CUDA GPU; use train.device: auto or cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"train.device {name!r}: only {torch.cuda.device_count()} CUDA GPU(s) visible")
    return device


def setup_determinism(device: torch.device) -> None:
    """Deterministic kernels where torch has them, so a rerun on the same GPU model and software gives the same
    bits. warn_only: ops without a deterministic kernel warn instead of failing the stage. Needs no change on the
    CPU, whose kernels are deterministic for a fixed thread count."""
    if device.type != "cuda":
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it before its first call
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


def stage_device(name: str = "auto", stage: str = "stage", *, log: bool = True) -> torch.device:
    """Resolve and make deterministic the device of a stage; with ``log``, say so in one line on stderr.
    Stages resolve first (a bad device fails before any work) and log once their inputs are open, so a stage
    that fails on a missing input still prints exactly one error line."""
    device = resolve_device(name)
    setup_determinism(device)
    if log:
        log_device(device, stage)
    return device


def log_device(device: torch.device, stage: str) -> None:
    detail = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(f"classprune {stage}: device {device}{detail}", file=sys.stderr)


def state_to_cpu(state: dict) -> dict:
    """A state_dict with every tensor on the CPU (detached), for device-independent checkpoints."""
    return {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in state.items()}


def set_threads(default: int) -> None:
    """CLASSPRUNE_THREADS (set by the parallel flow) wins over ``default`` (train.threads), so workers x threads
    fits the CPU; 0 keeps torch's default."""
    n = int(os.environ.get("CLASSPRUNE_THREADS", default) or 0)
    if n > 0:
        torch.set_num_threads(n)
