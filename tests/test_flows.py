"""End-to-end tests of the Prefect flows against a real Prefect server on 127.0.0.1.

One module-scoped server and one pair of runs of the tiny profile (the parallel flow and, at the same
time, a serial ``dvc repro`` in a second copy) serve every test; the failure and Dask tests start from
copies of those finished workspaces so that they only re-run what they need. Both runs use
CLASSPRUNE_THREADS=1: CPU training is then bit-for-bit deterministic, so their metrics must be equal.
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from itertools import combinations
from pathlib import Path

import pytest
import yaml

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]  # _project, flows
from _project import clone_workspace, dvc, make_project, prefect_server, set_params, stage_name  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200),
              pytest.mark.filterwarnings("ignore:_NoneStep.value:DeprecationWarning")]  # inside dvc
SERIAL_ENV = {"CLASSPRUNE_THREADS": "1"}
# The tiny profile with one cheap baseline (L-OBS alone costs more than the rest of the tiny pipeline):
# these tests are about orchestration, not about the baselines.
FAST = {"baselines.methods": ["snip"]}


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    """One real Prefect server for the module; yields its API URL."""
    with prefect_server(tmp_path_factory.mktemp("prefect-home")) as (url, _port):
        yield url


def task_runs(state) -> dict:
    """Task runs of a finished flow run, by task run name (the stage labels)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from prefect.client.schemas.sorting import TaskRunSort

    with get_client(sync_client=True) as client:   # sort and limit given: this server rejects nulls
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC, limit=200)
    return {r.name: r for r in runs}


def run_flow(repo: Path, **kwargs):
    from flows.pipeline import dvc_pipeline

    return dvc_pipeline(repo_dir=str(repo), threads_per_worker=1, return_state=True, **kwargs)


def status(repo: Path, *targets: str) -> dict:
    """``dvc status`` of the whole repo, or of seed 0's stages ``targets`` (names inside their file)."""
    targets = tuple(f"pipelines/seed_0/dvc.yaml:{t}" for t in targets)
    return json.loads(dvc(repo, "status", "--json", *targets).stdout or "{}")


def locked_stages(repo: Path) -> set[str]:
    """Stage names of every lock file: dvc.lock and pipelines/seed_<s>/dvc.lock."""
    from classprune.pipelines import lock_files

    return {name for lock in lock_files(repo) for name in yaml.safe_load(lock.read_text())["stages"]}


def reports(repo: Path) -> dict:
    return {name: json.loads((repo / "reports" / name).read_text()) for name in ("metrics.json", "metrics_val.json")}


@pytest.fixture(scope="module")
def runs(prefect_api, tmp_path_factory):
    """The tiny profile twice: the parallel flow (2 workers) and a serial ``dvc repro``, side by side."""
    parallel = make_project(tmp_path_factory.mktemp("parallel") / "repo", overrides=FAST)
    serial = make_project(tmp_path_factory.mktemp("serial") / "repo", overrides=FAST)
    serial_log = open(serial.parent / "repro.log", "w")
    proc = subprocess.Popen(["dvc", "repro"], cwd=serial, stdout=serial_log, stderr=subprocess.STDOUT,
                            env={**os.environ, **SERIAL_ENV})
    t0 = time.monotonic()
    state = run_flow(parallel, workers=2)
    flow_s = time.monotonic() - t0
    rc = proc.wait(timeout=1200)
    serial_log.close()
    assert rc == 0, (serial.parent / "repro.log").read_text()[-3000:]
    print(f"parallel flow {flow_s:.0f} s, serial repro {time.monotonic() - t0:.0f} s (concurrently)")
    return {"parallel": parallel, "serial": serial, "state": state}


def test_parallel_flow_completes_like_dvc_repro(runs):
    from flows.dag import load_dag

    state, repo = runs["state"], runs["parallel"]
    assert state.is_completed(), state.message
    # every stage ran as its own task, and some of them at the same time
    stages = load_dag(repo, include_up_to_date=True)
    trs = task_runs(state)
    assert {s.short for s in stages} <= set(trs)     # task runs are named by the stage's name in its file
    assert all(trs[s.short].state.is_completed() for s in stages)
    spans = [(r.start_time, r.end_time) for r in trs.values()]
    assert any(a0 < b1 and b0 < a1 for (a0, a1), (b0, b1) in combinations(spans, 2)), "no task runs overlapped"
    # the workspace is exactly what `dvc repro` leaves: clean status, a complete dvc.lock, equal metrics
    assert status(repo) == {}
    assert locked_stages(repo) == {s.short for s in stages}
    assert reports(repo) == reports(runs["serial"])
    # every log line went to this server: no thread of the flow fell back to a temporary server of its own
    from prefect.server.api.server import SubprocessASGIServer

    assert not SubprocessASGIServer._instances, "a temporary Prefect server was started in this process"


def test_parallel_flow_reports_progress_and_time_left(runs, prefect_api):
    """The module's flow run logged "done N of M stages, about T min left" after every stage, kept the
    progress artifact at 100 % in the end, and left the stage durations per kind for the next estimate."""
    import httpx
    from prefect.logging.handlers import APILogWorker

    from flows.dag import load_dag
    from flows.progress import STAGE_TIMES

    state, repo = runs["state"], runs["parallel"]
    flow_run = str(state.state_details.flow_run_id)
    APILogWorker.drain_all(timeout=10)
    logs = httpx.post(f"{prefect_api}/logs/filter", json={
        "logs": {"flow_run_id": {"any_": [flow_run]}, "task_run_id": {"is_null_": True}},   # the flow's own lines
        "sort": "TIMESTAMP_ASC", "limit": 200}).raise_for_status().json()
    lines = [lg["message"] for lg in logs]
    assert "2 worker(s): as asked" in lines, lines
    done = [m for m in lines if m.startswith("done ")]
    times = json.loads((repo / STAGE_TIMES).read_text())     # .dvc/tmp/: git-ignored, written at the end
    last = times["runs"][-1]
    m = last["stages"]
    assert m == len(load_dag(repo, include_up_to_date=True)) == len(last["durations"])
    assert [d.split(" stages")[0] for d in done] == [f"done {n} of {m}" for n in range(1, m + 1)], done
    assert all(" min left" in d for d in done[1:]) and done[-1].startswith(f"done {m} of {m} stages, about 0.0 min")
    assert any(ln.startswith("estimate at 10 % done (") and ", real " in ln for ln in lines), lines
    arts = httpx.post(f"{prefect_api}/artifacts/filter", json={
        "artifacts": {"key": {"any_": ["classprune-progress"]}},
        "flow_runs": {"id": {"any_": [flow_run]}}}).raise_for_status().json()
    assert len(arts) == 1 and arts[0]["type"] == "progress" and float(arts[0]["data"]) == 100, arts
    assert arts[0]["description"] == done[-1]
    assert {"init", "lt", "evaluate", "baseline", "report"} <= set(times["kinds"])
    assert last["check"]["real_left_s"] > 0 and last["workers"] == 2
    assert all(k == stage_name(name).split("@")[0] and s > 0 for name, k, s in last["durations"])


def test_up_to_date_pipeline_runs_nothing(runs):
    state = run_flow(runs["parallel"], workers=2)
    assert state.is_completed() and "up to date" in state.message


def test_failing_stage_fails_flow_and_spares_sibling(runs, tmp_path):
    """black's first train stage fails: its chain and the report do not run, red's chain completes."""
    repo = clone_workspace(runs["parallel"], tmp_path / "repo")
    dvc_yaml = repo / "pipelines" / "seed.dvc.yaml"   # every seed's dvc.yaml links to it
    text = dvc_yaml.read_text()
    lt_cmd = "cmd: python stages/lt.py --scenario ${item.scenario}"
    assert lt_cmd in text
    # a changed cmd makes every round stage stale, so red's chain really re-runs
    dvc_yaml.write_text(text.replace(lt_cmd, "cmd: test ${item.scenario} != black && "
                                             "python stages/lt.py --scenario ${item.scenario}"))
    state = run_flow(repo, workers=2)
    assert state.is_failed()
    assert "lt@black-0-level0" in state.message and "lt@red" not in state.message
    trs = task_runs(state)  # task names are the stage names
    assert trs["lt@black-0-level0"].state.is_failed()
    assert "lt@black-0-level0" in trs["lt@black-0-level0"].state.message
    for name in ("lt@black-0-level1", "evaluate@black-0", "report"):
        assert trs[name].state.name == "NotReady", (name, trs[name].state)
    red = ["lt@red-0-level2", "evaluate@red-0"]
    assert all(trs[n].state.is_completed() for n in (*red, "lt@red-0-level0", "lt@red-0-level1"))
    assert status(repo, *red) == {}
    assert (repo / "models/red/seed_0/round_3/weights.pt").is_file()


def test_dask_runner_on_local_cluster(runs, tmp_path):
    """The Dask runner (2-worker LocalCluster) brings the tiny profile up to date after a change to red's loss."""
    pytest.importorskip("prefect_dask", reason="the [dask] extra is not installed (make test installs it)")
    repo = clone_workspace(runs["serial"], tmp_path / "repo")
    set_params(repo / "params.yaml", {"scenarios.red.gamma_first": 2})
    state = run_flow(repo, workers=2, task_runner="dask")
    assert state.is_completed(), state.message
    trs = task_runs(state)
    assert {f"lt@red-0-level{level}" for level in (0, 1, 2)} | {"evaluate@red-0", "report"} <= set(trs)
    # black's own stages are up to date: skipped; export_ch@black runs after report as export does (its DVC
    # stage then finds the channel selection unchanged)
    assert not any("black" in name for name in trs if not name.startswith("export_ch@"))
    assert all(r.state.is_completed() for r in trs.values())
    assert status(repo) == {}


def test_fanout_publishes_metric_artifacts(runs, prefect_api):
    """Up to date: the fan-out re-runs nothing and publishes the reports as artifacts with stable keys."""
    import httpx

    from flows.fanout import classprune_fanout

    repo = runs["parallel"]
    state = classprune_fanout(repo_dir=str(repo), return_state=True)
    assert state.is_completed(), state.message
    # plain HTTP: the 3.8 client sends explicit nulls for unset filters, which this server answers with 422
    flow_run = str(state.state_details.flow_run_id)
    arts = httpx.post(f"{prefect_api}/artifacts/filter", json={
        "artifacts": {"key": {"any_": ["classprune-metrics", "classprune-summary", "classprune-figure"]}},
        "flow_runs": {"id": {"any_": [flow_run]}}}).raise_for_status().json()
    by_key = {a["key"]: a for a in arts}
    assert set(by_key) == {"classprune-metrics", "classprune-summary", "classprune-figure"}
    figure = by_key["classprune-figure"]["data"]
    png = (repo / "reports/figures/test.png").read_bytes()
    assert "](data:image/png;base64," in figure and base64.b64decode(figure.split("base64,")[1].rstrip(")\n")) == png
    table = by_key["classprune-metrics"]["data"]
    table = json.loads(table) if isinstance(table, str) else table
    assert {"method", "seed", "round", "split", "auc", "fnr", "fpr"} <= set(table[0])
    assert {r["method"] for r in table} >= {"red", "black"}
    assert by_key["classprune-summary"]["data"] == (repo / "reports/summary.md").read_text()


def test_fanout_leaves_params_yaml_unchanged_and_streams_stage_output(runs, prefect_api, tmp_path):
    """A fan-out to red alone edits params.yaml for the run, then gives it its bytes back and saves the
    results as a DVC experiment; the module's runs streamed every stage's output into the task logs."""
    import httpx

    from flows.fanout import classprune_fanout

    repo = clone_workspace(runs["parallel"], tmp_path / "repo")
    before = (repo / "params.yaml").read_bytes()
    state = classprune_fanout(scenarios=["red"], threads=1, repo_dir=str(repo), return_state=True)
    assert state.is_completed(), state.message
    assert (repo / "params.yaml").read_bytes() == before
    assert "experiment fanout-" in state.message
    assert "fanout-" in dvc(repo, "exp", "show", "--json").stdout
    logs = httpx.post(f"{prefect_api}/logs/filter",
                      json={"limit": 200, "sort": "TIMESTAMP_DESC"}).raise_for_status().json()
    # the stages' output lines (INFO); the module's failing-stage test left an ERROR traceback on this server
    task_lines = [lg["message"] for lg in logs if lg.get("task_run_id") and lg["level"] == 20]
    assert any(m.startswith("Running stage '") for m in task_lines), task_lines[:20]            # stdout
    assert any(m.startswith("classprune red seed 0") for m in task_lines), task_lines[:20]       # stderr
    assert all("\n" not in m.strip() for m in task_lines)     # one record per output line
