"""Pin the CPU instruction set of torch's kernels before torch starts (``train.cpu_isa``).

oneDNN and ATen pick kernels per instruction set, so the same stage gives different float bits on an
AVX-512 machine and on an AVX2 one. Capping both at AVX2 makes the bits the same on either kind (at
about 1.14x the step time on an AVX-512 machine: benchmarks/bench_isa.py). This module must not import torch: the variables are
read once, when torch's CPU backends initialise.
"""
from __future__ import annotations

import os
from pathlib import Path

CPU_ISA = ("native", "avx2")
PIN_ENV = {"avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}}


def requested_isa(params_path: str | os.PathLike) -> str:
    """train.cpu_isa from the params file, read without validating the rest (load_params does that)."""
    import yaml

    try:
        raw = yaml.safe_load(Path(params_path).read_text()) or {}
        value = (raw.get("train") or {}).get("cpu_isa", "native")
    except (OSError, yaml.YAMLError, AttributeError):
        return "native"  # load_params reports the real problem in one line
    return value if value in CPU_ISA else "native"


def pin_cpu_isa(isa: str) -> None:
    """Set the kernel caps for ``isa`` in this process's environment (inherited by its children)."""
    if "torch" in __import__("sys").modules and isa != "native":
        raise RuntimeError("pin_cpu_isa must run before torch is imported")
    os.environ.update(PIN_ENV.get(isa, {}))


def check_pinned(isa: str) -> None:
    """After torch started: a pin the CPU cannot honour (no AVX2) would silently give other bits."""
    import torch

    from .errors import ConfigError

    got = torch.backends.cpu.get_cpu_capability()
    if isa == "avx2" and got.upper() != "AVX2":
        raise ConfigError(f"train.cpu_isa: avx2 asked, but torch runs {got} kernels on this CPU; "
                          "set train.cpu_isa: native (results then differ from AVX2 machines in the last bits)")
