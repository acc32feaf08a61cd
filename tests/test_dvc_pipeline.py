"""End-to-end: the real `dvc repro` on the tiny profile in a temporary git + DVC copy of the project."""
import json
import os
import re
import subprocess
from contextlib import contextmanager
import sys
from pathlib import Path

import pytest
import torch
import yaml

from classprune.evaluation.diagnose import CAUSES

sys.path.insert(0, str(Path(__file__).parent))
from _project import ROOT, git, make_project, stage_name  # noqa: E402

pytestmark = pytest.mark.slow


def run(cwd: Path, *cmd: str, check: bool = True, env: dict | None = None) -> str:
    """stdout + stderr of ``cmd``; the venv's bin first on PATH because stage commands say `python`. Stages
    take 2 threads unless CLASSPRUNE_THREADS says otherwise (conftest: 1 under make test's two workers)."""
    env = {"CLASSPRUNE_THREADS": "2", **os.environ, **(env or {})}
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + ":" + env.get("PATH", "")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr


def ran_stages(output: str) -> list[str]:
    """Stage names (without their pipelines/seed_<s>/dvc.yaml: prefix) in the order DVC ran them."""
    return [stage_name(s) for s in re.findall(r"Running stage '([^']+)'", output)]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    proj = make_project(tmp_path_factory.mktemp("dvc") / "proj")
    out = run(proj, "dvc", "repro", env={"CLASSPRUNE_TIMING_LOG": str(proj.parent / "timing.jsonl"),
                                         "CLASSPRUNE_MODULES_LOG": str(proj.parent / "modules.jsonl")})
    return proj, out


# Loaded by every stage but unable to change a result: the CLI dispatch, params validation (params.yaml names
# every key, and test_config checks config's defaults equal it), error types, atomic file writes (ours, and
# DVC's lock file made atomic: loaded wherever dvc is, e.g. under DVCLive), package
# markers (re-exports only, or a docstring), the baselines' params section, and the baselines' name registry where config
# only validates names with it. constants.py is declared wherever it is loaded (every stage, through config):
# its names set the criteria registries and the rounds check.
PLUMBING = {"src/classprune/__init__.py", "src/classprune/cli.py", "src/classprune/config.py",
            "src/classprune/errors.py", "src/classprune/io.py", "src/classprune/dvc_atomic.py", "src/classprune/prune_config.py",
            "src/classprune/scenarios.py", "src/classprune/data/__init__.py", "src/classprune/baselines/__init__.py",
            "src/classprune/baselines/registry.py", "src/classprune/baselines/config.py",
            *(f"src/classprune/{pkg}/__init__.py" for pkg in ("lottery", "models", "evaluation", "reporting", "edge")),
            "src/classprune/models/registry.py"}
# Plumbing elsewhere, logic in these stages: the registry picks the function a baseline stage runs.
LOGIC = {"baseline": {"src/classprune/baselines/registry.py"}}
# The network registry is plumbing where config only validates model.arch with it, logic wherever a stage builds
# a network (classprune.models.network loaded).
NETWORK, NETWORK_REGISTRY = "src/classprune/models/network.py", "src/classprune/models/registry.py"
STAGE_FILES = ("dvc.yaml", "pipelines/seed.dvc.yaml")   # the per-seed files are links to the second


def declared_stages(root: Path) -> dict:
    """Stage definitions of every pipeline file, by name (names are unique across them)."""
    return {name: d for f in STAGE_FILES for name, d in yaml.safe_load((root / f).read_text())["stages"].items()}


def missing_code_deps(modules_log: Path, root: Path) -> dict[str, list[str]]:
    """Per stage kind: project source files a stage loaded that its dvc.yaml deps do not list."""
    stages = declared_stages(root)
    missing: dict[str, set[str]] = {}
    for line in modules_log.read_text().splitlines():
        entry = json.loads(line)
        deps = {d if isinstance(d, str) else next(iter(d)) for d in stages[entry["step"]].get("deps", [])}
        logic = LOGIC.get(entry["step"], set()) | ({NETWORK_REGISTRY} if NETWORK in entry["files"] else set())
        lacking = set(entry["files"]) - deps - (PLUMBING - logic)
        if lacking:
            missing.setdefault(entry["step"], set()).update(lacking)
    return {k: sorted(v) for k, v in missing.items()}


def test_every_stage_lists_the_code_it_loads_as_deps(project):
    """Stale caching made impossible to miss: every project module a stage imported while it ran is a dep
    of that stage in dvc.yaml (or named plumbing above), so changing it reruns the stage."""
    proj, _ = project
    log = proj.parent / "modules.jsonl"
    seen = {json.loads(line)["step"] for line in log.read_text().splitlines()}
    assert seen >= {"prepare", "split", "cache", "pretrain", "init", "lt", "evaluate", "report", "baseline", "export"}
    assert missing_code_deps(log, ROOT) == {}


def test_every_stage_reports_its_startup_and_compute_cpu(project):
    """What `make bench` adds up for the start-up share: one line per stage run, both parts measured."""
    proj, out = project
    lines = [json.loads(ln) for ln in (proj.parent / "timing.jsonl").read_text().splitlines()]
    assert len(lines) == len(ran_stages(out))
    assert {ln["step"] for ln in lines} >= {"prepare", "pretrain", "init", "lt", "evaluate", "report"}
    assert all(ln["startup_cpu_s"] > 0 and ln["compute_cpu_s"] > 0 for ln in lines)


def load(path: Path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_repro_writes_the_artifact_contract(project):
    proj, out = project
    params = yaml.safe_load((proj / "params.yaml").read_text())
    scenarios, rounds, rate = params["run"]["scenarios"], len(params["prune"]["rounds"]), params["prune"]["rate"]
    seed = params["run"]["seeds"][0]
    w0s = [load(proj / "models" / sc / f"seed_{seed}" / "round_0" / "weights.pt") for sc in scenarios]
    assert all(torch.equal(w0s[0][n], w[n]) for w in w0s for n in w0s[0]), "scenarios must share W0"
    w0 = w0s[0]
    for sc in scenarios:
        prev_mask = None
        for k in range(1, rounds + 1):
            d = proj / "models" / sc / f"seed_{seed}" / f"round_{k}"
            weights, mask, rewound = load(d / "weights.pt"), load(d / "mask.pt"), load(d / "rewound.pt")
            layerwise = params["prune"]["scope"] == "layerwise"
            rates = params["prune"]["layer_rates"]
            assert not set(params["prune"]["ignore"]) & set(mask), "ignored tensors are never in a mask"
            kept, total = 0, 0
            for n, m in mask.items():
                assert m.dtype == torch.bool
                if layerwise or n in rates:
                    assert abs(int(m.sum()) - m.numel() * (1 - rates.get(n, rate)) ** (k - 1)) <= 1, (sc, k, n)
                if n not in rates:
                    kept, total = kept + int(m.sum()), total + m.numel()
                assert torch.all(weights[n][~m] == 0), f"pruned weights trained in {sc} round {k} {n}"
                if prev_mask is not None:
                    assert not torch.any(m & ~prev_mask[n]), "masks only shrink"
                assert torch.equal(rewound[n][m], w0[n][m]), "round k starts from the survivors of W0"
                assert torch.all(rewound[n][~m] == 0)
            assert abs(kept - total * (1 - rate) ** (k - 1)) <= len(mask), (sc, k)
            prev_mask = mask
    channel = params["run"].get("channel_scenarios", [])
    for sc in channel:  # channel tickets: whole channels pruned, survivors rewound to the same W0
        prev_mask = None
        for k in range(1, rounds + 1):
            d = proj / "models" / f"{sc}-channel" / f"seed_{seed}" / f"round_{k}"
            weights, cmask, rewound = load(d / "weights.pt"), load(d / "mask.pt"), load(d / "rewound.pt")
            for n, m in cmask.items():
                assert torch.all(weights[n][~m] == 0) and torch.equal(rewound[n][m], w0[n][m]), (sc, k, n)
                if prev_mask is not None:
                    assert not torch.any(m & ~prev_mask[n]), "masks only shrink"
            for n, m in cmask.items():  # a conv filter is kept or dropped whole: every live filter reads the
                if n.startswith("features") and n.endswith(".weight"):  # same live input channels
                    rows = m.flatten(1)
                    live = rows[rows.any(1)]
                    assert len(live) and torch.equal(live, live[:1].expand_as(live)), (sc, k, n)
            prev_mask = cmask
        result = json.loads((proj / "reports" / "rounds" / f"seed_{seed}" / f"{sc}-channel.json").read_text())
        macs = [rd["macs"] for rd in result["rounds"]]
        assert result["kind"] == "channel" and macs == sorted(macs, reverse=True) and macs[-1] < macs[0]
        reinit = json.loads((proj / "reports" / "rounds" / f"seed_{seed}" / f"{sc}-channel-reinit.json").read_text())
        assert [rd["remaining"] for rd in reinit["rounds"]] == [rd["remaining"] for rd in result["rounds"][1:]]
        dense = proj / "models" / sc / f"seed_{seed}" / "round_1"  # the chain's dense round is the weight chain's
        assert (dense / "weights.pt").read_bytes() == (proj / "models" / f"{sc}-channel" / f"seed_{seed}" / "round_1"
                                                       / "weights.pt").read_bytes()
    metrics = json.loads((proj / "reports" / "metrics.json").read_text())
    assert set(metrics) == (set(scenarios) | set(params["baselines"]["methods"])
                            | {f"{sc}-channel" for sc in channel} | {f"{sc}-channel-reinit" for sc in channel})
    for sc in scenarios:
        assert sorted(metrics[sc]) == [f"round_{k}" for k in range(1, rounds + 1)]
        for k in range(1, rounds + 1):
            entry = metrics[sc][f"round_{k}"]
            assert {"auc", "accuracy", "fnr", "fpr", "remaining", "remaining_all", "op_fnr", "op_fpr", "n_constant",
                    "n_dead"} <= set(entry)
            assert entry["remaining"] == pytest.approx((1 - rate) ** (k - 1), abs=1e-3)
            assert entry["remaining_all"] >= entry["remaining"] - 1e-9
        result = json.loads((proj / "reports" / "rounds" / f"seed_{seed}" / f"{sc}.json").read_text())
        for rd in result["rounds"]:  # the evaluate stage says whether each round's network is alive, and why not
            d = rd["diagnosis"]
            assert d["units"] == {"features": 256, "head1": 8, "head2": 8} and d["cause"] in CAUSES
            assert set(d["w0_kept"]) == {n.removesuffix(".weight") for n in mask if n.endswith(".weight")}
    for split in ("test", "val"):
        assert (proj / "reports" / "figures" / f"{split}.png").stat().st_size > 10_000
        for sc in scenarios:
            assert len((proj / "reports" / "curves" / split / f"{sc}.csv").read_text().splitlines()) == rounds + 1
    summary = (proj / "reports" / "summary.md").read_text()
    assert "FN budget" in summary and "Collapses" in summary and all(sc in summary for sc in scenarios)
    assert "Why tickets die" in summary
    selection = json.loads((proj / "reports" / "selection.json").read_text())
    assert set(selection) == set(scenarios)
    assert (proj / "dvc.lock").is_file()


def test_training_and_roc_curves_are_dvc_plots(project):
    """DVCLive's per-step curves of every training stage, gathered one table per chain, and the ROC/PR
    curves, as `dvc plots show` draws them; the summary holds the confusion matrix at the shipped threshold."""
    import pandas as pd

    proj, _ = project
    params = yaml.safe_load((proj / "params.yaml").read_text())
    seed, rounds = params["run"]["seeds"][0], [r["k"] for r in params["prune"]["rounds"]]
    steps = params["train"]["iterations"]
    for sc in params["run"]["scenarios"]:
        df = pd.read_csv(proj / "reports" / "training" / sc / f"seed_{seed}.csv")
        assert df.groupby("round")["step"].apply(list).to_dict() == {k: list(range(steps)) for k in rounds}
        assert df[["loss", "wce", "rank", "lr", "grad_norm"]].notna().all().all()
        for k in rounds:  # DVCLive's own files beside the round's outputs
            assert (proj / "models" / sc / f"seed_{seed}" / f"round_{k}" / "train" / "metrics.json").is_file()
    pre = pd.read_csv(proj / "reports" / "training" / "pretrain.csv")
    assert len(pre) == params["pretrain"]["steps"] and pre["loss"].notna().all()
    trained = pd.read_csv(proj / "reports" / "training" / "snip_trained" / f"seed_{seed}.csv")
    assert sorted(trained["round"].unique()) == rounds and len(trained) == steps * len(rounds)
    assert pd.read_csv(proj / "reports" / "training" / "snip" / f"seed_{seed}.csv").empty  # snip does not train
    roc = pd.read_csv(proj / "reports" / "roc" / "roc_test.csv")
    assert set(roc["method"]) >= set(params["run"]["scenarios"]) and {"dense", "lowest"} <= set(roc["level"])
    assert roc.groupby(["method", "level"])["tpr"].max().eq(1.0).all()
    for split in ("val", "test"):
        assert (proj / "reports" / "figures" / f"roc_pr_{split}.png").stat().st_size > 10_000
    shown = json.loads(run(proj, "dvc", "plots", "show", "--json"))["data"]
    assert {f"reports/training/{sc}/seed_{seed}.csv" for sc in params["run"]["scenarios"]} <= set(shown)
    assert {"ROC (test split, first seed)", "Precision-recall (val split, first seed)"} <= set(shown)
    chart = shown[f"reports/training/{params['run']['scenarios'][0]}/seed_{seed}.csv"][0]["content"]
    assert chart["facet"]["row"]["field"] == "field" and len(chart["data"]["values"]) == 5 * steps * len(rounds)
    assert "Confusion matrix at the shipped threshold" in (proj / "reports" / "summary.md").read_text()


def test_second_repro_runs_nothing(project):
    proj, _ = project
    out = run(proj, "dvc", "repro")
    assert ran_stages(out) == []
    assert "up to date" in out.lower() or "didn't change" in out.lower()


def test_changing_one_scenario_reruns_only_its_stages_and_metrics_diff_shows_it(project):
    proj, _ = project
    git(proj, "add", "-A")
    git(proj, "commit", "-qm", "results")
    data = yaml.safe_load((proj / "params.yaml").read_text())
    assert data["scenarios"]["black"]["lam"] != 1
    data["scenarios"]["black"]["lam"] = 1
    (proj / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    out = run(proj, "dvc", "repro")
    stages = ran_stages(out)
    assert stages, out
    assert all("black" in s or s in ("report", "export") for s in stages), stages
    assert any(s.startswith("lt@black") for s in stages) and "report" in stages
    assert not any(s.startswith("init@") for s in stages), "lambda does not change W0"
    diff = json.loads(run(proj, "dvc", "metrics", "diff", "--json"))
    changed_keys = [k for f in diff.values() for k in f]
    assert any(k.startswith("black.") for k in changed_keys), diff
    assert not any(k.startswith("red.") for k in changed_keys), diff


def _stale(proj: Path) -> set[str]:
    """Stages whose own dependencies changed (`dvc status`), without running anything."""
    return {stage_name(s) for s in json.loads(run(proj, "dvc", "status", "--json"))}


@contextmanager
def _edited_params(proj: Path, edit):
    """params.yaml with ``edit`` applied for the duration of the block, then its original bytes back."""
    path = proj / "params.yaml"
    original = path.read_text()
    data = yaml.safe_load(original)
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        yield
    finally:
        path.write_text(original)


def _with_params(proj: Path, edit) -> set[str]:
    with _edited_params(proj, edit):
        return _stale(proj)


def test_dependency_hygiene_dropout_retrains_and_eval_batch_size_does_not(project):
    proj, _ = project
    assert _stale(proj) == set()
    stale = _with_params(proj, lambda p: p["model"].__setitem__("dropout", 0.3))
    assert {s for s in stale if s.startswith("lt@")}, stale        # the round stages read model.dropout
    stale = _with_params(proj, lambda p: p["evaluate"].__setitem__("batch_size", 7))
    assert stale and not any(s.startswith(("lt@", "init@")) for s in stale), stale
    assert any(s.startswith("evaluate@") for s in stale), stale
    stale = _with_params(proj, lambda p: p["train"].__setitem__("cpu_isa", "native"))
    assert any(s.startswith("lt@") for s in stale) and any(s.startswith("evaluate@") for s in stale), stale


def test_a_dataset_outside_the_repo_is_a_dependency(project, tmp_path):
    from classprune.data.synthetic import generate

    proj, _ = project
    outside = tmp_path / "CRACK"
    generate(outside, n_positive=2, n_negative=3, image_size=32, seed=1)

    def point_at_outside(p):
        p["data"] |= {"source": "crack", "root": str(outside)}

    run(proj, "dvc", "stage", "list")  # dvc.yaml still parses with an absolute root
    before = _with_params(proj, point_at_outside)
    assert "prepare" in before
    # record the folder's state as DVC would, then change one image: prepare is stale again
    try:
        with _edited_params(proj, point_at_outside):
            run(proj, "dvc", "commit", "-f", "prepare")
            assert "prepare" not in _stale(proj)
            next((outside / "Negative").iterdir()).write_bytes(next((outside / "Positive").iterdir()).read_bytes())
            assert "prepare" in _stale(proj)
    finally:
        run(proj, "dvc", "commit", "-f", "prepare")


def test_pinned_isa_gives_the_same_bytes_natively_and_under_the_avx2_restriction(project, tmp_path, monkeypatch):
    from _project import clone_workspace

    proj, _ = project
    restricted = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    args = ("--scenario", "red", "--seed", "0", "--round", "2")
    out = {}
    for name, env in (("native", {}), ("restricted", restricted)):
        work = clone_workspace(proj, tmp_path / name)
        assert yaml.safe_load((work / "params.yaml").read_text())["train"]["cpu_isa"] == "avx2"
        for key in restricted:
            monkeypatch.delenv(key, raising=False)
        proc = subprocess.run([sys.executable, "stages/lt.py", *args], cwd=work, capture_output=True, text=True,
                              env={**{k: v for k, v in os.environ.items() if k not in restricted}, **env,
                                   "CLASSPRUNE_THREADS": "2"})
        assert proc.returncode == 0, proc.stderr[-2000:]
        out[name] = (work / "models" / "red" / "seed_0" / "round_2" / "weights.pt").read_bytes()
    assert out["native"] == out["restricted"]


def test_report_lists_only_the_current_scenarios_rounds_and_methods(project):
    proj, _ = project
    path = proj / "params.yaml"
    data = yaml.safe_load(path.read_text())
    data["run"]["scenarios"] = ["black"]
    data["run"]["channel_scenarios"] = []
    data["prune"]["rounds"] = data["prune"]["rounds"][:2]
    data["baselines"]["methods"] = ["snip"]
    data["baselines"]["source_scenario"] = "black"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    run(proj, "dvc", "repro")
    metrics = json.loads((proj / "reports" / "metrics.json").read_text())
    assert set(metrics) == {"black", "snip"}, "stale result files of another configuration must not be shown"
    assert all(sorted(v) == ["round_1", "round_2"] for v in metrics.values()), metrics
    summary = (proj / "reports" / "summary.md").read_text()
    assert "| red |" not in summary and "lobs" not in summary and "| 25.00 |" not in summary
    assert (proj / "reports" / "rounds" / "seed_0" / "red.json").exists(), "the stale file stays, unread"
    assert (proj / "reports" / "rounds" / "seed_0" / "black-channel.json").exists()
