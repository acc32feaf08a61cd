"""Profiles are overlays of params.yaml: every key they name exists there, and applying one keeps comments."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from classprune.config import load_params
from classprune.profiles import (ProfileError, apply_to_file, flatten, load_overlay, merge, merged_params,
                                 set_args)

ROOT = Path(__file__).resolve().parents[1]
PROFILES = sorted(p.stem for p in (ROOT / "profiles").glob("*.yaml"))


def test_profiles_exist():
    assert {"tiny", "paper", "isic"} <= set(PROFILES)


@pytest.mark.parametrize("name", PROFILES)
def test_profile_names_only_params_keys_and_merges_to_valid_params(name, tmp_path):
    """A key params.yaml lacks (a typo, a renamed knob) would be ignored silently: merged_params refuses it."""
    merged = merged_params(name, ROOT / "params.yaml", ROOT / "profiles")
    overlay = yaml.safe_load((ROOT / "profiles" / f"{name}.yaml").read_text())
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    leaves = flatten(overlay, base=base)
    changed = [k for k, v in leaves.items() if _get(base, k) != v]
    assert changed == list(leaves), f"{name} repeats values params.yaml already has: {sorted(set(leaves) - set(changed))}"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(merged))
    assert load_params(tmp_path / "params.yaml").profile == name


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        d = d[part]
    return d


def test_unknown_key_is_an_error_naming_it():
    base = {"train": {"lr": 0.1}, "run": {"scenarios": ["red"]}}
    assert merge(base, {"train": {"lr": 0.01}})["train"]["lr"] == 0.01
    assert base["train"]["lr"] == 0.1
    with pytest.raises(ProfileError, match="train.lrr"):
        merge(base, {"train": {"lrr": 0.01}})
    with pytest.raises(ProfileError, match="trian"):
        merge(base, {"trian": {"lr": 0.01}})


def test_isic_keeps_no_crack_counts():
    overlay = yaml.safe_load((ROOT / "profiles" / "isic.yaml").read_text())
    assert "n_negative" not in overlay["data"] and "n_positive" not in overlay["data"]


def test_apply_to_file_sets_values_and_keeps_comments(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    n = apply_to_file("tiny", params, ROOT / "profiles")
    text = params.read_text()
    assert n == len(flatten(yaml.safe_load((ROOT / "profiles" / "tiny.yaml").read_text())))
    assert yaml.safe_load(text) == merged_params("tiny", ROOT / "params.yaml", ROOT / "profiles")
    assert "# Scenarios (paper Sec. III-C)" in text and "\n# --- baselines" in text
    assert "    - {k: 3, prev: 2}\n" in text and "{k: 4" not in text


@pytest.mark.parametrize("name", PROFILES)
def test_set_args_are_overrides_dvc_applies_to_give_the_profiles_params(name, tmp_path):
    """`classprune profile NAME --exp` runs `dvc exp run` with these -S arguments: DVC's own override parser
    (Hydra's grammar) must turn params.yaml into exactly the merged profile."""
    from dvc.utils.hydra import apply_overrides

    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    args = set_args(load_overlay(name, ROOT / "profiles"), base)
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    apply_overrides(tmp_path / "params.yaml", args[1::2])
    assert yaml.safe_load((tmp_path / "params.yaml").read_text()) == merged_params(name, ROOT / "params.yaml",
                                                                                    ROOT / "profiles")


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-c", "from classprune.cli import main; main()", *args], cwd=cwd,
                          capture_output=True, text=True)


def test_cli_help_lists_every_command_on_one_line():
    from classprune.cli import COMMANDS

    proc = _cli("--help")
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    for name in COMMANDS:
        assert [ln for ln in lines if ln.split()[:1] == [name] and len(ln.split()) > 1], (name, proc.stdout)
    assert {"run", "profile", "predict", "lt", "evaluate", "report", "export"} <= set(COMMANDS)


def test_cli_profile_errors_are_one_line(tmp_path):
    proc = _cli("profile", "nope")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "known profiles" in proc.stderr
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "bad.yaml").write_text("train: {lrr: 1}\n")
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    proc = _cli("profile", "bad", "--write", cwd=tmp_path)
    assert proc.returncode == 2 and "train.lrr" in proc.stderr and "Traceback" not in proc.stderr
    assert (tmp_path / "params.yaml").read_text() == (ROOT / "params.yaml").read_text()


def test_cli_run_outside_the_project_is_one_line(tmp_path):
    proc = _cli("run", "--workers", "1", cwd=tmp_path)
    assert proc.returncode == 2 and "not the classprune project" in proc.stderr and "Traceback" not in proc.stderr


def test_a_mapping_params_yaml_holds_empty_is_set_whole(tmp_path):
    """prune.layer_rates: {} maps tensor names to rates, so a profile's {output: 0.25} is its value, not a key
    params.yaml lacks (the mobilenet_v2 profile sets it); a misspelt key of a real section is still refused."""
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    overlay = {"prune": {"scope": "layerwise", "ignore": [], "layer_rates": {"output": 0.25}}}
    assert merge(base, overlay)["prune"]["layer_rates"] == {"output": 0.25}
    assert set_args(overlay, base) == ["-S", 'prune.scope="layerwise"', "-S", "prune.ignore=[]",
                                       "-S", "++prune.layer_rates={output:0.25}"]
    with pytest.raises(ProfileError, match="prune.scopee"):
        merge(base, {"prune": {"scopee": "layerwise"}})
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "rates.yaml").write_text(yaml.safe_dump({"profile": "rates", **overlay}))
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    assert apply_to_file("rates", params, tmp_path / "profiles") == 4
    assert load_params(params).prune.layer_rates == {"classifier.6.weight": 0.25}
