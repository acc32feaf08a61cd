"""Fast checks of the flows' plumbing: the stage graph read from DVC and the fan-out's params edit.

No stage runs here (a few seconds: one fresh copy of the repo, DVC reads it).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]  # _project, flows
from _project import make_project, stage_name, sync_pipelines  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:_NoneStep.value:DeprecationWarning")  # inside dvc


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("dag") / "repo")


def test_dag_is_dvc_order_with_upstream_edges(project):
    from flows.dag import load_dag

    stages = load_dag(project)                       # fresh copy: everything is stale
    assert "pipelines/seed_0/dvc.yaml:lt@red-0-level1" in {s.name for s in stages}   # DVC's addressing
    stages = [_short(s) for s in stages]
    names = [s.name for s in stages]
    # export (and export_ch, the channel tickets') follows the report through reports/selection*.json
    assert set(names[:4]) == {"prepare", "split", "cache", "pretrain"}
    assert [n for n in names if n.split("@")[0] not in ("export", "export_ch")][-1] == "report"
    pos = {n: i for i, n in enumerate(names)}
    assert all(pos[u] < pos[s.name] for s in stages for u in s.upstream)
    by = {s.name: s for s in stages}
    # one stage per round: round k = level + 1 prunes round k-1's outputs; seeds by value
    assert set(by["lt@red-0-level1"].upstream) == {"cache", "lt@red-0-level0"}
    assert set(by["lt@red-0-level0"].upstream) == {"cache", "init@red-0"}
    assert set(by["init@red-0"].upstream) == {"pretrain"}
    assert by["lt@red-0-level1"].args == {"scenario": "red", "seed": "0", "round": "2"}
    # one evaluation per chain, after every round of the chain
    assert set(by["evaluate@red-0"].upstream) == {"cache", "init@red-0", "lt@red-0-level0", "lt@red-0-level1",
                                                   "lt@red-0-level2"}
    assert {"evaluate@red-0", "evaluate@black-0"} <= set(by["report"].upstream)
    assert {"cache", "report"} <= set(by["export"].upstream)
    assert {"cache", "report"} <= set(by["export_ch@black"].upstream)   # the tiny profile's channel ticket
    # a channel ticket is one stage per chain, from the weight chain's W0 and dense round; its evaluation and
    # control read the chain
    assert set(by["lt_ch@black-0"].upstream) == {"cache", "init@black-0", "lt@black-0-level0"}
    assert set(by["eval_ch@black-0"].upstream) == set(by["reinit@black-0"].upstream) == {"cache", "lt_ch@black-0"}


def _short(s):
    """The stage with its own and its upstream names inside their files (``lt@red-0-level1``)."""
    from dataclasses import replace

    return replace(s, name=stage_name(s.name), upstream=tuple(stage_name(u) for u in s.upstream))


def test_targets_select_a_scenario_and_its_upstream(project):
    from flows.dag import load_dag

    red = {s.short for s in load_dag(project, ["red"])}
    assert {"prepare", "split", "cache", "init@red-0", "evaluate@red-0"} <= red
    assert not any("black" in n for n in red) and "report" not in red
    one = [s.short for s in load_dag(project, ["lt@red-0-level0"])]
    assert set(one) == {"prepare", "split", "cache", "pretrain", "init@red-0", "lt@red-0-level0"}
    assert one[-2:] == ["init@red-0", "lt@red-0-level0"]
    with pytest.raises(ValueError, match="nope"):
        load_dag(project, ["nope"])


def test_the_prefetched_dag_is_the_flows_dag_and_an_error_is_raised_in_the_flow(project):
    """main() starts DVC's status check in another process before the Prefect server starts; the flow
    takes that result once, and a failure there surfaces as the same one-line error as without it."""
    from flows import dag as graph   # flows.pipeline takes prefetch_dag and take_dag from here
    from flows.dag import load_dag

    graph.prefetch_dag(str(project), ["red"])
    [(_, future)] = graph._PREFETCHED.values()
    expected = load_dag(project, ["red"])
    assert future.result(timeout=120) == expected      # computed in the other process
    assert graph.take_dag(str(project), ["red"]) == expected
    assert not graph._PREFETCHED, "taken once"
    graph.prefetch_dag(str(project), ["nope"])
    with pytest.raises(ValueError, match="unknown targets .'nope'."):
        graph.take_dag(str(project), ["nope"])
    # params.yaml changed after the prefetch (as the fan-out does): the graph is read again
    from flows.fanout import set_params

    params = project / "params.yaml"
    original = params.read_bytes()
    graph.prefetch_dag(str(project), None)
    [(_, future)] = graph._PREFETCHED.values()
    assert "init@red-0" in {s.short for s in future.result(timeout=120)}   # read before the edit
    try:
        set_params(params, seeds=[3])
        names = {s.short for s in graph.take_dag(str(project), None)}
        assert sorted(p.name for p in (project / "pipelines").glob("seed_*")) == ["seed_3"], "follows run.seeds"
    finally:
        params.write_bytes(original)
        sync_pipelines(project)
    assert "init@red-3" in names and "init@red-0" not in names
    assert not graph._PREFETCHED


def test_fanout_params_edit_keeps_the_file_readable(tmp_path):
    from classprune.config import load_params
    from flows.fanout import set_params

    params = tmp_path / "params.yaml"
    params.write_text((Path(__file__).parents[1] / "params.yaml").read_text())
    comments = [ln for ln in params.read_text().splitlines() if ln.lstrip().startswith("#")]
    set_params(params, scenarios=["red", "green"], seeds=[0, 3])
    text = params.read_text()
    assert all(c in text for c in comments)           # the documentation in params.yaml survives
    run = yaml.safe_load(text)["run"]
    assert run["scenarios"] == ["red", "green"]
    assert run["channel_scenarios"] == ["red"]          # black's channel ticket needs black's weight chain
    assert run["seeds"] == [0, 3]
    assert load_params(params).run.seeds == [0, 3]


@pytest.mark.parametrize("wanted, cpus, workers, expected", [
    (1, 2, 2, 1),    # the embedded default: as `dvc repro`, so both give the same bits
    (2, 2, 2, 1),    # more than fits: lowered so workers x threads <= CPUs
    (2, 8, 2, 2),    # fits: kept
    (0, 8, 2, 4),    # 0 (torch's default): as many as fit
    (0, 1, 4, 1),    # never below 1
])
def test_stage_threads_keep_train_threads_unless_the_cpu_is_oversubscribed(tmp_path, monkeypatch,
                                                                          wanted, cpus, workers, expected):
    from flows.pipeline import stage_threads

    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": {"threads": wanted}}))
    monkeypatch.setattr("flows.pipeline.usable_cores", lambda: cpus)
    assert stage_threads(str(tmp_path), workers) == expected


def test_stage_threads_without_params_use_config_defaults(tmp_path, monkeypatch):
    """No params.yaml: the flow takes train.threads's default from config, as the stages would."""
    from classprune.config import Train
    from flows.pipeline import stage_threads

    monkeypatch.setattr("flows.pipeline.usable_cores", lambda: 4)
    assert stage_threads(str(tmp_path), 2) == min(Train().threads, 2)
