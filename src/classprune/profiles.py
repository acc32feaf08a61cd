"""Profiles: overlays of only the params.yaml keys that differ (profiles/<name>.yaml).

A profile never replaces params.yaml wholesale, so a change to params.yaml reaches every profile and
params.yaml keeps its history. Apply one as DVC experiment parameters (``dvc exp run -S key=value``: see
:func:`set_args`) or write it into params.yaml in place, comments kept (:func:`apply_to_file`).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

from .errors import ConfigError

PROFILES_DIR = Path("profiles")


class ProfileError(ConfigError, ValueError):
    """An unknown profile, or a profile key params.yaml does not have."""


def profile_path(name: str | Path, profiles_dir: Path = PROFILES_DIR) -> Path:
    """``tiny`` -> profiles/tiny.yaml; a path to a .yaml file is taken as it is."""
    path = Path(name)
    if path.suffix not in (".yaml", ".yml"):
        path = Path(profiles_dir) / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in Path(profiles_dir).glob("*.yaml"))
        raise ProfileError(f"profile {str(name)!r} not found ({path}); known profiles: {', '.join(known) or 'none'}")
    return path


def load_overlay(name: str | Path, profiles_dir: Path = PROFILES_DIR) -> dict:
    import yaml

    path = profile_path(name, profiles_dir)
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: a profile is a mapping of params.yaml keys, not {type(data).__name__}")
    return data


def flatten(overlay: dict, prefix: str = "", base: dict | None = None) -> dict[str, object]:
    """{"train": {"lr": 0.01}} -> {"train.lr": 0.01}; lists and scalars are leaves (a list replaces the base list),
    and so is a mapping that ``base`` holds empty (``prune.layer_rates: {}``: its keys are values, tensor names)."""
    out: dict[str, object] = {}
    for key, value in overlay.items():
        dotted = f"{prefix}{key}"
        sub = base.get(key) if isinstance(base, dict) else None
        if isinstance(value, dict) and value and sub != {}:
            out.update(flatten(value, dotted + ".", sub))
        else:
            out[dotted] = value
    return out


def check_keys(base: dict, overlay: dict, source: str = "profile") -> None:
    """Every overlay key must exist in the base params: a typo would otherwise be silently ignored."""
    for dotted in flatten(overlay, base=base):
        node = base
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ProfileError(f"{source}: key {dotted!r} is not in params.yaml (a typo, or a key that was renamed)")
            node = node[part]


def merge(base: dict, overlay: dict, source: str = "profile") -> dict:
    """A copy of ``base`` with the overlay's leaves set (nested mappings merged, lists replaced)."""
    check_keys(base, overlay, source)
    out = copy.deepcopy(base)
    for dotted, value in flatten(overlay, base=base).items():
        *parents, leaf = dotted.split(".")
        node = out
        for p in parents:
            node = node[p]
        node[leaf] = copy.deepcopy(value)
    return out


def merged_params(name: str | Path, base: str | Path = "params.yaml", profiles_dir: Path = PROFILES_DIR) -> dict:
    """params.yaml with the profile applied, as a plain dict."""
    import yaml

    return merge(yaml.safe_load(Path(base).read_text()), load_overlay(name, profiles_dir), str(name))


def _hydra(value) -> str:
    """A value in the override grammar ``dvc exp run -S`` parses (Hydra's): quoted strings, bare mapping keys."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_hydra(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_hydra(v) for v in value) + "]"
    return json.dumps(value)


def set_args(overlay: dict, base: dict | None = None) -> list[str]:
    """``dvc exp run`` arguments, ``-S key=value`` per leaf; a mapping leaf (one params.yaml holds empty) takes
    ``++``, since Hydra refuses to override an empty mapping with keys."""
    return [arg for dotted, value in flatten(overlay, base=base).items()
            for arg in ("-S", f"{'++' if isinstance(value, dict) else ''}{dotted}={_hydra(value)}")]


def _ruamel():
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes, yaml.width = True, 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def _flow(value):
    """Lists and mappings written inline, as params.yaml writes them."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(value, dict):
        node = CommentedMap((k, _flow(v)) for k, v in value.items())
    elif isinstance(value, list):
        node = CommentedSeq(_flow(v) for v in value)
    else:
        return value
    node.fa.set_flow_style()
    return node


def _replace_items(seq, values: list) -> None:
    """Replace a ruamel block sequence's items in place; the comment after its last item moves along (in
    params.yaml that is the next section's heading)."""
    tail = seq.ca.items.pop(len(seq) - 1, None) if len(seq) else None
    seq.ca.items.clear()
    seq[:] = [_flow(v) for v in values]
    if tail is not None and len(seq):
        seq.ca.items[len(seq) - 1] = tail


def set_values(path: str | Path, values: dict[str, object], strict: bool = True) -> None:
    """Set dotted keys in a params file in place with ruamel (a dvc dependency): comments and layout kept.

    ``strict``: a key the file does not have is an error (as for profiles); otherwise it is created.
    """
    path = Path(path)
    yaml = _ruamel()
    data = yaml.load(path.read_text())
    for dotted, value in values.items():
        *parents, leaf = dotted.split(".")
        node = data
        for p in parents:
            if p not in node:
                if strict:
                    raise ProfileError(f"{path}: key {dotted!r} is not in params.yaml")
                node[p] = {}
            node = node[p]
        if strict and leaf not in node:
            raise ProfileError(f"{path}: key {dotted!r} is not in params.yaml")
        old = node.get(leaf)
        if isinstance(old, list) and isinstance(value, list) and not old.fa.flow_style():
            _replace_items(old, value)       # a block list keeps its layout and its trailing comment
        else:
            node[leaf] = _flow(value)
    with open(path, "w") as f:
        yaml.dump(data, f)


def apply_to_file(name: str | Path, params_file: str | Path = "params.yaml", profiles_dir: Path = PROFILES_DIR) -> int:
    """Write the profile into params_file (comments kept); returns the number of keys set."""
    import yaml

    overlay = load_overlay(name, profiles_dir)
    base = yaml.safe_load(Path(params_file).read_text())
    check_keys(base, overlay, str(name))
    values = flatten(overlay, base=base)
    set_values(params_file, values)
    return len(values)
