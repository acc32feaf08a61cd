"""flows.progress without Prefect: the time-left arithmetic on a made-up DAG, the worker count, the stage-times file."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # flows

from flows.dag import Stage  # noqa: E402
from flows.progress import (KEEP_RUNS, STAGE_TIMES, Estimate, check_line, kind, load_prior,  # noqa: E402
                            machine_workers, save_run, summary, usable_cores)

GiB = 1 << 30


def dag() -> list[Stage]:
    """Two chains init -> lt -> lt -> evaluate, joined by report; upstream first."""
    stages = []
    for c in ("a", "b"):
        stages += [Stage(f"init@{c}", ""), Stage(f"lt@{c}-0", "", (f"init@{c}",)),
                   Stage(f"lt@{c}-1", "", (f"lt@{c}-0",)), Stage(f"evaluate@{c}", "", (f"lt@{c}-1",))]
    return stages + [Stage("report", "", ("evaluate@a", "evaluate@b"))]


def test_kind_is_the_name_before_the_at():
    assert [kind(n) for n in ("lt@red-0-level1", "baseline@snip-0", "report")] == ["lt", "baseline", "report"]


def test_nothing_finished_and_no_prior_means_no_estimate():
    est = Estimate(dag(), workers=2)
    assert est.left() is None
    assert est.progress(1.0) == "done 0 of 9 stages, time left not known yet"


def test_time_left_is_work_over_workers_or_the_critical_path():
    est = Estimate(dag(), workers=2, prior={"evaluate": 20, "report": 5, "lt": 99})
    est.finish("init@a", 10)
    est.finish("lt@a-0", 30)
    # this run's means (init 10, lt 30) beat the prior's lt 99; evaluate and report from the prior.
    # remaining: init@b 10, lt@b-0 30, lt@b-1 30, lt@a-1 30, evaluate@a 20, evaluate@b 20, report 5
    # work 145 / 2 workers = 72.5; chain init@b > lt > lt > evaluate@b > report = 95
    assert est.left() == pytest.approx(95)
    est.workers = 1
    assert est.left() == pytest.approx(145)                     # one worker: the work
    est.workers = 8
    assert est.left() == pytest.approx(95)                      # many: the chain
    # a running stage counts what it has left; one past its estimate counts 0
    est.workers = 2
    assert est.left({"init@b": 4}) == pytest.approx(91)         # the chain starts with it
    assert est.left({"lt@a-1": 12}) == pytest.approx(95)        # not on the chain; work 133 / 2 = 66.5
    est.workers = 1
    assert est.left({"lt@a-1": 12}) == pytest.approx(133)
    assert est.left({"lt@a-1": 500}) == pytest.approx(115)


def test_unseen_kinds_take_the_mean_of_all_finished_stages_without_a_prior():
    est = Estimate(dag(), workers=2)
    est.finish("init@a", 10)
    est.finish("lt@a-0", 30)
    # evaluate and report: (10 + 30) / 2 = 20; work 10 + 3 * 30 + 3 * 20 = 160 / 2 = 80; chain 10+30+30+20+20
    assert est.left() == pytest.approx(110)
    est.finish("lt@a-1", 50)                                    # lt's running mean: 40; overall mean 30
    assert est.stage_estimate("lt@b-0") == pytest.approx(40)
    assert est.stage_estimate("report") == pytest.approx(30)
    assert est.left() == pytest.approx(10 + 40 + 40 + 30 + 30)  # chain b; work 180 / 2 = 90


def test_progress_lines_trace_and_the_check_at_ten_percent():
    est = Estimate(dag(), workers=2, prior={"evaluate": 20, "report": 5})
    est.finish("init@a", 10)
    # lt not seen, no prior: the mean of all finished, 10; work 95 / 2; chain init@b lt lt evaluate report 55
    assert est.progress(10.0) == "done 1 of 9 stages, about 0.9 min left"
    est.finish("init@b", None)                                  # failed: done, no duration
    line = est.progress(12.0)
    assert line.startswith("done 2 of 9 stages, about ") and line.endswith("(1 failed or not run)")
    for name in [s.name for s in dag()][1:]:
        if name not in est.finished:
            est.finish(name, 10)
    assert est.progress(100.0) == "done 9 of 9 stages, about 0.0 min left (1 failed or not run)"
    assert est.percent == 100
    check = est.check(130.0)                                    # the first line at >= 10 %: 1 of 9 done
    assert check == {"fraction": 0.1, "done": 1, "elapsed_s": 10.0, "estimate_left_s": 55.0, "real_left_s": 120.0}
    assert check_line(check) == "estimate at 10 % done (1 stages, after 0.2 min) was 0.9 min left, real 2.0 min"
    assert summary(est, 130.0)[0] == "8 stage(s) ran in 2.2 min; mean per kind: evaluate 10.0 s, init 10.0 s, " \
                                     "lt 10.0 s, report 10.0 s"


@pytest.mark.parametrize("cores, available, workers, why", [
    (2, 11 * GiB, 2, "2 worker(s): 2 core(s), memory allows 11"),      # cores decide
    (16, 3 * GiB + GiB // 2, 3, "3 worker(s): 16 core(s), memory allows 3"),   # memory decides
    (4, GiB // 2, 1, "1 worker(s): 4 core(s), memory allows 0"),       # never below 1
])
def test_workers_are_the_cores_capped_by_memory(cores, available, workers, why):
    n, text = machine_workers(cores, available, per_stage=GiB)
    assert n == workers and text.startswith(why)


def test_usable_cores_follow_the_affinity_mask(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert usable_cores() == 3
    monkeypatch.delattr("os.sched_getaffinity", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    assert usable_cores() == 6


def test_stage_times_file_keeps_the_durations_and_gives_the_next_prior(tmp_path):
    assert load_prior(tmp_path) == {}
    est = Estimate(dag()[:4], workers=2)
    for name, s in (("init@a", 10), ("lt@a-0", 30), ("lt@a-1", 50), ("evaluate@a", 5)):
        est.finish(name, s)
        est.progress(float(s))
    save_run(tmp_path, est, 95.0, task_runner="threads")
    assert load_prior(tmp_path) == {"init": 10, "lt": 40, "evaluate": 5}
    again = Estimate([Stage("lt@b-0", ""), Stage("report", "")], workers=1)
    again.finish("lt@b-0", 20)
    for _ in range(KEEP_RUNS):
        save_run(tmp_path, again, 20.0)
    data = json.loads((tmp_path / STAGE_TIMES).read_text())
    assert data["kinds"] == {"init": 10, "lt": 20, "evaluate": 5}    # this run's kinds replace, the others stay
    assert len(data["runs"]) == KEEP_RUNS
    assert data["runs"][-1]["durations"] == [["lt@b-0", "lt", 20]]
    (tmp_path / STAGE_TIMES).write_text("{not json")
    assert load_prior(tmp_path) == {}
    save_run(tmp_path, est, 95.0)                               # a broken file is replaced, not fatal
    run = json.loads((tmp_path / STAGE_TIMES).read_text())["runs"][0]
    assert run["check"]["estimate_left_s"] is not None and run["durations"][0] == ["init@a", "init", 10]
