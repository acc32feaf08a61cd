"""params.yaml validation: every mistake is one line naming the key, and the CLI exits non-zero."""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from classprune.config import load_params
from classprune.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
PROFILES = sorted((ROOT / "profiles").glob("*.yaml")) + [ROOT / "params.yaml"]


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_shipped_profiles_are_valid(path, tmp_path):
    import yaml

    from classprune.profiles import merged_params

    if path.parent.name == "profiles":          # an overlay: valid once applied to params.yaml
        path, merged = tmp_path / "params.yaml", merged_params(path.stem, ROOT / "params.yaml", path.parent)
        path.write_text(yaml.safe_dump(merged))
    params = load_params(path)
    assert params.prune.n_rounds >= 1 and set(params.run.scenarios) <= set(params.scenarios)


def _edit(tmp_path, pattern, repl):
    text = (ROOT / "params.yaml").read_text()
    new = re.sub(pattern, repl, text, count=1, flags=re.M)
    assert new != text, pattern
    path = tmp_path / "params.yaml"
    path.write_text(new)
    return path


BAD = [
    (r"^  rate: 0.5", "  rate: 1.5", "prune.rate"),
    (r"^  rate: 0.5", "  rate: 0", "prune.rate"),
    (r"black: \{gamma_first: 1, ", "black: {gamma_first: {beta: 1.0}, ", "scenarios.black.gamma_first"),
    (r"black: \{gamma_first: 1, ", "black: {gamma_first: -2, ", "scenarios.black.gamma_first"),
    (r"(red: +\{gamma_first: 1, +gamma_rest: 1, +lam: )0", r"\g<1>-1", "scenarios.red.lam"),
    (r"^  scenarios: \[red, blue, black, green\]", "  scenarios: [red, purple]", "purple"),
    (r"^  criterion: magnitude ", "  criterion: taylor ", "prune.criterion"),
    (r"^  criterion: magnitude ", "  criterion: snip ", "prune.criterion"),  # a baseline's, not an LT criterion
    (r"^  scope: global ", "  scope: chaotic ", "prune.scope"),
    (r"^  layer_rates: \{\}", "  layer_rates: {classifier.6.weight: 1.0}", "prune.layer_rates"),
    (r"^  ignore: \[output\]", "  ignore: output", "prune.ignore"),
    (r"^  image_size: 64 ", "  image_size: 32 ", "data.image_size"),
    (r"^  rate: 0.5", "  rate: 0.99", "prune"),  # 7 rounds at p=0.99 leave nothing
    (r"^    - \{k: 2, prev: 1\}", "    - {k: 2, prev: 0}", "prune.rounds"),
    (r"^  fractions: \[0.7, 0.15, 0.15\]", "  fractions: [0.7, 0.2, 0.2]", "data.fractions"),
    (r"^  source: synthetic", "  source: imagenet", "data.source"),
    (r"^  lr: 0.02$", "  lr: -1", "train.lr"),
    (r"^  lr: 0.02$", "  lr: 0.02\n  learning_rate: 0.1", "train.learning_rate"),
    (r"^  schedule: cosine ", "  schedule: step ", "train.schedule"),
    (r"^  warmup: 20 ", "  warmup: 200 ", "train.warmup"),
    (r"^  warmup: 20 ", "  warmup: -1 ", "train.warmup"),
]


@pytest.mark.parametrize("pattern,repl,key", BAD, ids=[b[2] + ":" + b[1].strip() for b in BAD])
def test_invalid_params_give_one_line_error_naming_the_key(tmp_path, pattern, repl, key):
    with pytest.raises(ConfigError) as err:
        load_params(_edit(tmp_path, pattern, repl))
    msg = str(err.value)
    assert "\n" not in msg and key in msg, msg


def test_missing_and_malformed_params_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("prune: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(tmp_path / "bad.yaml")


def test_cli_reports_bad_params_in_one_line_with_nonzero_exit(tmp_path):
    path = _edit(tmp_path, r"^  rate: 0.5", "  rate: 2")
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / "lt.py"), "--params", str(path),
                           "--scenario", "red", "--seed", "0", "--round", "2"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: ") and "prune.rate" in proc.stderr
    assert "Traceback" not in proc.stderr


_EXIT = """
import multiprocessing, sys, time
from classprune.cli import _exit
if __name__ == "__main__":
    if sys.argv[1] == "child":
        multiprocessing.Process(target=time.sleep, args=(1.5,)).start()
    print("the stage's last line", end="")  # unflushed: a pipe is block-buffered
    print("and its error", end="", file=sys.stderr)
    _exit(3)
"""


@pytest.mark.parametrize("child", ["none", "child"])
def test_stage_exit_keeps_status_and_buffered_output_and_waits_for_children(tmp_path, child):
    """Stages leave with os._exit (no interpreter teardown); nothing printed may be lost, and a live child
    process (a loader worker) makes it take the normal exit, which waits for that child."""
    script = tmp_path / "stage.py"
    script.write_text(_EXIT)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered, as under dvc
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        started = time.monotonic()
        proc = subprocess.run([sys.executable, str(script), child], stdout=out, stderr=err, env=env, timeout=60)
        took = time.monotonic() - started
    assert proc.returncode == 3
    assert (tmp_path / "out").read_text() == "the stage's last line"
    assert (tmp_path / "err").read_text() == "and its error"
    if child == "child":
        assert took >= 1.5, "the normal exit joins a live child"


def _differing_defaults(model_cls, raw: dict, prefix: str = "") -> list[str]:
    from pydantic import BaseModel

    out = []
    for name, field in model_cls.model_fields.items():
        key = prefix + name
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += _differing_defaults(ann, raw.get(name, {}), key + ".")
        elif not field.is_required() and name in raw:
            default = field.get_default(call_default_factory=True)
            if isinstance(default, dict):
                default = {k: v.model_dump() if isinstance(v, BaseModel) else v for k, v in default.items()}
            if (list(default) if isinstance(default, tuple) else default) != raw[name]:
                out.append(f"{key}: config.py {default!r}, params.yaml {raw[name]!r}")
    return out


def test_config_defaults_are_params_yaml():
    """One source of truth: a default in config.py is the value params.yaml holds (or config.py has none).
    One opt-in: a params file without run.channel_scenarios (a user's overlay, a test's) runs no channel
    chains; params.yaml turns red's and black's on for the default pipeline."""
    import yaml

    from classprune.config import Params

    opt_in = ("run.channel_scenarios: config.py [], ",)
    differing = _differing_defaults(Params, yaml.safe_load(Path("params.yaml").read_text()))
    assert [d for d in differing if not d.startswith(opt_in)] == []


def test_config_is_a_leaf_without_torch():
    """The flows read params through config; importing and validating it must not import torch."""
    code = ("import sys; from classprune.config import load_params; load_params('params.yaml'); "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('classprune')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    leaves = {"classprune", "classprune.config", "classprune.constants", "classprune.errors", "classprune.scenarios",
              "classprune.baselines", "classprune.baselines.registry", "classprune.baselines.config", "classprune.prune_config",
              "classprune.models", "classprune.models.registry"}
    assert set(eval(out)) <= leaves, out
