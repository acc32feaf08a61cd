"""Hardening: atomic writes, weights-only checkpoints, determinism, clean stage failures and
kill -9 in the middle of ``dvc repro`` followed by a resume.

Everything here is fast except the kill-and-resume test (marked slow): it runs the real pipeline twice.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from classprune.errors import CheckpointError
from classprune.io import atomic_path, load_torch, read_json, save_torch, write_json, write_text
from classprune.profiles import merged_params

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    """The environment of a child process: this interpreter's bin first (dvc.yaml says `python`)."""
    env = {**os.environ, **extra}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def _listing(directory: Path) -> list[str]:
    """Every entry below ``directory`` (hidden temporaries included), relative and sorted."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


# --- atomic writes ------------------------------------------------------------------------------------


class Boom(RuntimeError):
    pass


def test_failed_atomic_file_write_leaves_nothing(tmp_path):
    target = tmp_path / "out" / "result.json"
    with pytest.raises(Boom):
        with atomic_path(target) as tmp:
            tmp.write_text('{"half": ')
            raise Boom
    assert not target.exists()
    assert _listing(tmp_path / "out") == []


def test_failed_atomic_dir_write_leaves_nothing(tmp_path):
    target = tmp_path / "cache"
    with pytest.raises(Boom):
        with atomic_path(target, is_dir=True) as tmp:
            tmp.mkdir(parents=True, exist_ok=True)
            (tmp / "train_images.npy").write_bytes(b"\0" * 100)
            raise Boom
    assert not target.exists()
    assert _listing(tmp_path) == []


def test_failed_rewrite_keeps_the_existing_file(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"auc": 0.9})
    with pytest.raises(Boom):
        with atomic_path(target) as tmp:
            tmp.write_text("garbage")
            raise Boom
    assert read_json(target) == {"auc": 0.9}
    assert _listing(tmp_path) == ["metrics.json"]


def test_failed_rewrite_keeps_the_existing_dir_and_a_good_one_replaces_it(tmp_path):
    target = tmp_path / "curves"
    with atomic_path(target, is_dir=True) as tmp:
        tmp.mkdir(exist_ok=True)
        (tmp / "old.csv").write_text("a\n1\n")
    with pytest.raises(Boom):
        with atomic_path(target, is_dir=True) as tmp:
            tmp.mkdir(exist_ok=True)
            (tmp / "new.csv").write_text("partial")
            raise Boom
    assert _listing(tmp_path) == ["curves", "curves/old.csv"]
    with atomic_path(target, is_dir=True) as tmp:
        tmp.mkdir(exist_ok=True)
        (tmp / "new.csv").write_text("b\n2\n")
    assert _listing(tmp_path) == ["curves", "curves/new.csv"], "a rewrite replaces the dir, no stale files"


def test_save_torch_that_fails_midway_leaves_no_file_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "weights.pt"
    with pytest.raises(Exception):
        save_torch(target, {"w": torch.ones(3), "bad": lambda: None})  # a lambda cannot be pickled
    assert _listing(tmp_path) == []
    save_torch(target, {"w": torch.ones(3)})
    with pytest.raises(Exception):
        save_torch(target, {"w": torch.zeros(3), "bad": lambda: None})
    assert torch.equal(load_torch(target)["w"], torch.ones(3))
    assert _listing(tmp_path) == ["weights.pt"]


def test_save_torch_and_write_json_write_complete_files(tmp_path):
    state = {f"layer{i}.weight": torch.randn(64, 64) for i in range(4)}
    save_torch(tmp_path / "m" / "weights.pt", state)
    loaded = torch.load(tmp_path / "m" / "weights.pt", weights_only=True)
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    obj = {"red": {"round_1": {"auc": 0.75, "fnr": None, "remaining": 1.0}}, "nan": float("nan")}
    write_json(tmp_path / "r" / "metrics.json", obj)
    back = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert back["red"] == obj["red"] and np.isnan(back["nan"])
    write_text(tmp_path / "r" / "summary.md", "# done\n")
    assert (tmp_path / "r" / "summary.md").read_text() == "# done\n"
    assert _listing(tmp_path) == ["m", "m/weights.pt", "r", "r/metrics.json", "r/summary.md"]


def test_sigkill_during_an_atomic_write_leaves_no_output(tmp_path):
    """A killed stage never leaves ``path``: at most a hidden temporary sibling that no DVC out names."""
    target = tmp_path / "models" / "weights.pt"
    ready = tmp_path / "ready"
    code = ("import sys, time\nfrom pathlib import Path\nfrom classprune.io import atomic_path\n"
            "with atomic_path(sys.argv[1]) as tmp:\n"
            "    tmp.write_bytes(b'x' * 1000)\n    Path(sys.argv[2]).touch()\n    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(target), str(ready)], env=_env())
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "writer did not start"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    assert not target.exists()
    leftovers = [p.name for p in target.parent.iterdir()]
    assert all(name.startswith(".weights.pt.") and name.endswith(".tmp") for name in leftovers), leftovers


def _chain_json(method: str, rounds: int) -> dict:
    split = {"auc": 0.5, "accuracy": 0.8, "fnr": 1.0, "fpr": 0.0, "tp": 0, "fp": 0, "tn": 8, "fn": 2, "constant": True}
    return {"method": method, "kind": "scenario", "seed": 0,
            "rounds": [{"round": k, "remaining": 0.5 ** (k - 1), "nonzero": 10, "val": split, "test": split}
                       for k in range(1, rounds + 1)]}


def test_report_ignores_temporaries_left_in_reports_rounds_by_a_killed_writer(tmp_path):
    """The report reads the declared result files only, so a killed writer's temporary is never parsed."""
    from classprune.config import load_params
    from classprune.paths import declared_results
    from classprune.reporting.report import load_results

    import yaml

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(profile_params("tiny"), sort_keys=False))
    params = load_params(tmp_path / "params.yaml")
    rounds = tmp_path / "reports" / "rounds" / "seed_0"
    for path in declared_results(params):  # weight and channel tickets, controls, baselines
        write_json(tmp_path / path, _chain_json(path.stem, len(params.prune.rounds)))
    stale = rounds / ".red.json.k1ll3d.tmp"
    stale.write_text(json.dumps(_chain_json("red", 9))[:40])  # killed in the middle of the write
    df = load_results(params, tmp_path)
    assert sorted(df["round"].unique()) == [r.k for r in params.prune.rounds]


# --- checkpoints --------------------------------------------------------------------------------------


class CodeInPickle:
    """Unpickling this runs a shell command (the classic malicious checkpoint)."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return os.system, (f"echo pwned > {self.target}",)


def _one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg, f"not one line: {msg!r}"
    return msg


def test_load_torch_loads_a_state_dict(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(4, 2))
    torch.save(model.state_dict(), tmp_path / "w.pt")
    loaded = load_torch(tmp_path / "w.pt")
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())


def test_load_torch_refuses_a_pickle_with_code_and_does_not_run_it(tmp_path):
    victim = tmp_path / "pwned.txt"
    torch.save({"weight": torch.ones(2), "payload": CodeInPickle(victim)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError) as err:
        load_torch(tmp_path / "evil.pt")
    msg = _one_line(err.value)
    assert "evil.pt" in msg
    assert not victim.exists(), "the pickle's code ran"


def test_refusal_names_the_blocked_code_and_does_not_advise_weights_only_false(tmp_path):
    torch.save(CodeInPickle(tmp_path / "pwned.txt"), tmp_path / "evil.pt")
    with pytest.raises(CheckpointError) as err:
        load_torch(tmp_path / "evil.pt")
    msg = _one_line(err.value)
    assert "system" in msg, msg
    assert "weights_only` set to `False`" not in msg and "will likely succeed" not in msg, msg


def test_load_mask_refuses_a_pickle_with_code(tmp_path):
    from classprune.lottery.masks import load_mask

    victim = tmp_path / "pwned.txt"
    torch.save(CodeInPickle(victim), tmp_path / "mask.pt")
    with pytest.raises(CheckpointError):
        load_mask(tmp_path / "mask.pt")
    assert not victim.exists()


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _flipped(start: float):
    def flip(data: bytes) -> bytes:
        b = bytearray(data)
        at = int(len(b) * start)
        for i in range(at, at + 64):
            b[i] ^= 0xFF
        return bytes(b)
    return flip


@pytest.mark.parametrize("corrupt", [
    pytest.param(_truncated, id="truncated"),
    pytest.param(_flipped(0.0), id="flipped-header"),
    pytest.param(_flipped(1 / 3), id="flipped-tensor-data"),  # torch.load alone would not notice
    pytest.param(lambda d: bytes(range(256)) * 4, id="garbage"),
    pytest.param(lambda d: b"\0" * 1000, id="zeros"),
    pytest.param(lambda d: b"", id="empty"),  # torch raises IndexError
    pytest.param(lambda d: b"hello world\n", id="text"),  # torch raises KeyError
])
def test_corrupt_checkpoint_is_a_one_line_checkpoint_error(tmp_path, corrupt):
    buf = tmp_path / "good.pt"
    torch.save({"w": torch.randn(32, 32)}, buf)
    (tmp_path / "bad.pt").write_bytes(corrupt(buf.read_bytes()))
    with pytest.raises(CheckpointError) as err:
        load_torch(tmp_path / "bad.pt")
    assert "bad.pt" in _one_line(err.value)


def test_missing_checkpoint_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError) as err:
        load_torch(tmp_path / "nope.pt")
    _one_line(err.value)


@pytest.mark.parametrize("obj", [
    pytest.param({"features.0.weight": torch.ones(2, 2)}, id="float-values"),
    pytest.param({"features.0.weight": torch.ones(2, 2, dtype=torch.uint8)}, id="uint8-values"),
    pytest.param([torch.ones(2, dtype=torch.bool)], id="list"),
    pytest.param(torch.ones(2, dtype=torch.bool), id="bare-tensor"),
])
def test_load_mask_refuses_what_is_not_a_dict_of_bool_tensors(tmp_path, obj):
    from classprune.lottery.masks import load_mask

    torch.save(obj, tmp_path / "mask.pt")
    with pytest.raises(CheckpointError) as err:
        load_mask(tmp_path / "mask.pt")
    _one_line(err.value)


def test_load_mask_round_trips(tmp_path):
    from classprune.lottery.masks import load_mask, save_mask

    mask = {"a.weight": torch.rand(4, 4) > 0.5, "a.bias": torch.ones(4, dtype=torch.bool)}
    save_mask(mask, tmp_path / "mask.pt")
    back = load_mask(tmp_path / "mask.pt")
    assert back.keys() == mask.keys() and all(torch.equal(back[k], mask[k]) for k in mask)


# --- determinism --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    """A decoded cache of 40 synthetic 64 px images (train/val/test), built by the real code."""
    return _load_project().build_tiny_cache(tmp_path_factory.mktemp("determinism"))


def _lottery_chain(cache_dir: Path, workdir: Path, seed: int) -> dict:
    """Two rounds of black as the pipeline runs them (classprune.lottery.runner.run_chain: W0, train, prune, rewind,
    train) in a fresh project dir over ``cache_dir``, then round 2 evaluated by the evaluate stage's code."""
    import yaml

    from classprune import io, paths
    from classprune.lottery import runner as lottery
    from classprune.config import Params
    from classprune.evaluation.evaluate import evaluate_model
    from classprune.lottery.masks import load_mask

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["model"]["pretrained"] = "none"  # no pretrain stage needed
    raw["train"].update(iterations=4, warmup=1, batch_size=8, device="cpu")
    raw["prune"]["rounds"] = [{"k": 1, "prev": 0}, {"k": 2, "prev": 1}]
    raw["run"]["seeds"], raw["evaluate"]["batch_size"] = [seed], 16
    params = Params.model_validate(raw)
    (workdir / "data").mkdir(parents=True)
    (workdir / "data" / "cache").symlink_to(cache_dir)
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        torch.rand(17)  # whatever the global RNG did before must not matter
        results = lottery.run_chain(params, "black", seed)
        rp = paths.round_paths(params, "black", seed, 2)
        trained, mask = io.load_torch(rp.weights), load_mask(rp.mask)
        metrics = evaluate_model(params, lottery.build(params, seed, trained), mask)
        return {"losses": [r["final_loss"] for r in results], "trained": trained, "mask": mask,
                "rewound": io.load_torch(rp.rewound), "metrics": metrics}
    finally:
        os.chdir(cwd)


def _same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def lt_runs(tiny_cache, tmp_path_factory):
    """Two runs with seed 3 and one with seed 4 (computed once for both tests)."""
    root = tmp_path_factory.mktemp("chains")
    return {"a": _lottery_chain(tiny_cache, root / "a", seed=3), "again": _lottery_chain(tiny_cache, root / "again", seed=3),
            "other": _lottery_chain(tiny_cache, root / "other", seed=4)}


def test_same_seed_gives_bit_identical_weights_masks_and_metrics(lt_runs):
    first, second = lt_runs["a"], lt_runs["again"]
    assert first["losses"] == second["losses"]
    assert _same_tensors(first["trained"], second["trained"])
    assert _same_tensors(first["mask"], second["mask"])
    assert _same_tensors(first["rewound"], second["rewound"])
    scores = [m.pop("scores") for m in (first["metrics"], second["metrics"])]  # per-image arrays, kept for ROC
    assert all(np.array_equal(a, b) for s in scores[0] for a, b in zip(scores[0][s], scores[1][s]))
    assert first["metrics"] == second["metrics"]


def test_a_different_seed_changes_weights_masks_and_scores(lt_runs):
    a, b = lt_runs["a"], lt_runs["other"]
    assert not _same_tensors(a["trained"], b["trained"])
    assert not _same_tensors(a["mask"], b["mask"])
    assert a["metrics"]["val"] != b["metrics"]["val"] or a["metrics"]["test"] != b["metrics"]["test"]
    assert a["losses"] != b["losses"]


# --- stage CLI failures -------------------------------------------------------------------------------


def _stage(cwd: Path, name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "stages" / f"{name}.py"), *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=300)


def _assert_one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_train_stage_without_its_inputs_fails_cleanly_and_writes_nothing(tmp_path, monkeypatch):
    from classprune.lottery import runner as lottery
    from classprune.config import load_params

    raw = profile_params("tiny")
    raw["model"]["pretrained"] = "none"  # a seeded W0: this test is about the round stage's inputs
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    args = ("--scenario", "red", "--seed", "0", "--round", "1")
    line = _assert_one_line_error(_stage(tmp_path, "lt", *args))  # no W0, no mask, no cache
    assert "round_0" in line, line
    assert _listing(tmp_path) == ["params.yaml"]

    monkeypatch.chdir(tmp_path)
    lottery.init(load_params("params.yaml"), "red", 0)  # what the init stage writes: W0 and the full mask
    before = _listing(tmp_path)
    assert "models/red/seed_0/round_0/rewound.pt" in before
    line = _assert_one_line_error(_stage(tmp_path, "lt", *args))  # W0 and mask, but no data/cache
    assert "cache" in line, line
    assert _listing(tmp_path) == before, "a failed stage must not create outputs"
    assert not (tmp_path / "models" / "red" / "seed_0" / "round_1").exists()


def test_diverging_round_stops_with_one_line_and_writes_nothing(tmp_path, monkeypatch, tiny_cache):
    """Forced to diverge (an absurd lr), the lt stage names round, tensor and the knobs, and leaves no output."""
    import shutil

    import yaml

    from classprune.lottery import runner as lottery
    from classprune.config import load_params

    raw = profile_params("tiny")
    raw["model"]["pretrained"] = "none"
    raw["train"] |= {"lr": 1e30, "grad_clip": 0.0, "loader_workers": 0, "cpu_isa": "native"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    shutil.copytree(tiny_cache, tmp_path / "data" / "cache")
    monkeypatch.chdir(tmp_path)
    lottery.init(load_params("params.yaml"), "red", 0)
    before = _listing(tmp_path)
    proc = _stage(tmp_path, "lt", "--scenario", "red", "--seed", "0", "--round", "1")
    # the stage's one progress line (its device) may come first; the error is one line, no traceback
    proc.stderr = "\n".join(ln for ln in proc.stderr.splitlines() if not ln.endswith(": device cpu"))
    line = _assert_one_line_error(proc)
    assert line.startswith("error: red seed 0 round 1: training diverged at step"), line
    assert "train.lr" in line and "train.grad_clip" in line
    assert _listing(tmp_path) == before, "a diverged round must not write anything"


# --- kill -9 and resume -------------------------------------------------------------------------------


def profile_params(name: str) -> dict:
    """params.yaml with profiles/<name>.yaml (an overlay) applied."""
    return merged_params(name, ROOT / "params.yaml", ROOT / "profiles")


def _load_project():
    spec = importlib.util.spec_from_file_location("_classprune_test_project", ROOT / "tests" / "_project.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _make_project():
    return _load_project().make_project


def _small_tiny_params(dest: Path) -> Path:
    """The tiny profile cut to one scenario, two rounds and one baseline, so two runs fit in minutes."""
    params = profile_params("tiny")
    params["run"]["scenarios"], params["run"]["channel_scenarios"] = ["red"], []
    params["prune"]["rounds"] = params["prune"]["rounds"][:2]
    if "baselines" in params:
        params["baselines"]["methods"] = ["snip"]
        params["baselines"]["source_scenario"] = "red"
    dest.write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


def _ran(log: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", log)


def _locked_stages(project: Path) -> set[str]:
    lock = project / "dvc.lock"
    return set(yaml.safe_load(lock.read_text())["stages"]) if lock.is_file() else set()


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_kill_9_mid_pipeline_then_dvc_repro_resumes_and_matches_an_uninterrupted_run(tmp_path):
    make_project = _make_project()
    params = _small_tiny_params(tmp_path / "params.yaml")
    env = _env(CLASSPRUNE_THREADS="1")   # two repro runs at once: one thread each fits the two cores
    whole, killed = make_project(tmp_path / "whole", params), make_project(tmp_path / "killed", params)
    logs = {name: open(tmp_path / f"{name}.log", "w") for name in ("whole", "killed")}
    start = dict(stdout=None, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    # the uninterrupted reference runs meanwhile, in its own copy
    ref = subprocess.Popen(["dvc", "repro"], cwd=whole, **{**start, "stdout": logs["whole"]})
    victim = subprocess.Popen(["dvc", "repro"], cwd=killed, **{**start, "stdout": logs["killed"]})
    try:
        weights = list((killed / "models").glob("*/seed_*/round_*/weights.pt")) if (killed / "models").exists() else []
        deadline = time.monotonic() + 900
        while not weights:
            assert victim.poll() is None, f"dvc repro ended before any training: {(tmp_path / 'killed.log').read_text()}"
            assert time.monotonic() < deadline, "no train stage finished in time"
            time.sleep(0.2)
            weights = list((killed / "models").glob("*/seed_*/round_*/weights.pt")) if (killed / "models").exists() else []
        os.killpg(victim.pid, signal.SIGKILL)
        assert victim.wait(timeout=60) == -signal.SIGKILL
    finally:
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait()
    first_log = (tmp_path / "killed.log").read_text()
    done_before = _locked_stages(killed)
    started_before = _ran(first_log)
    assert done_before and set(done_before) <= set(started_before)

    # no stale lock to clear by hand: the repo lock is an fcntl lock (released with the process) and DVC
    # drops rwlock entries of dead PIDs itself
    resumed = subprocess.run(["dvc", "repro"], cwd=killed, env=env, capture_output=True, text=True, timeout=1200)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    ran_after = _ran(resumed.stdout + resumed.stderr)

    assert ref.wait(timeout=1200) == 0, (tmp_path / "whole.log").read_text()[-3000:]
    for f in logs.values():
        f.close()
    all_stages = set(_ran((tmp_path / "whole.log").read_text()))
    assert not done_before & set(ran_after), f"stages finished before the kill ran again: {done_before & set(ran_after)}"
    assert done_before | set(ran_after) == all_stages, sorted(all_stages - done_before - set(ran_after))
    assert len(ran_after) == len(set(ran_after))

    status = subprocess.run(["dvc", "status"], cwd=killed, env=env, capture_output=True, text=True)
    assert "up to date" in status.stdout, status.stdout
    assert read_json(killed / "reports" / "metrics.json") == read_json(whole / "reports" / "metrics.json")
    for rel in ("models/red/seed_0/round_2/weights.pt", "models/red/seed_0/round_2/mask.pt"):
        assert _same_tensors(load_torch(killed / rel), load_torch(whole / rel)), rel
