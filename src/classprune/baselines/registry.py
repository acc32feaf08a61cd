"""Names of the baseline methods and the modules that implement them.

A leaf module (no classprune imports): config validates ``baselines.methods`` against it without importing
the implementations, which use the pipeline, which imports config. An implementation is imported only when
its method runs (lazy registration).
"""
from __future__ import annotations

from importlib import import_module
from typing import Any, Callable

# method -> "module:function"; a module path without a dot is relative to classprune.baselines
METHODS: dict[str, str] = {
    "snip": "snip:snip",
    "snip_trained": "snip_trained:snip_trained",
    "lobs": "lobs:lobs",
    "mobilenet": "mobilenet:mobilenet",
}

Baseline = Callable[..., list[dict]]  # fn(params, seed, device) -> [result per level]


def register_baseline(name: str, target: str) -> None:
    """Add a method, e.g. ``register_baseline("mine", "mypkg.mine:run")``; config accepts it from then on."""
    if ":" not in target:
        raise ValueError(f"baseline target must be 'module:function', got {target!r}")
    METHODS[name] = target


def get_baseline(name: str) -> Baseline:
    """The function of a method, importing its module on first use."""
    from ..errors import ConfigError

    if name not in METHODS:
        raise ConfigError(f"unknown baseline {name!r}; allowed: {', '.join(sorted(METHODS))}")
    module, func = METHODS[name].split(":")
    fn: Any = getattr(import_module(module if "." in module else f"{__package__}.{module}"), func)
    return fn
