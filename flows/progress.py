"""The flow's run-time arithmetic, without Prefect: how many workers this machine takes, how long a run has left.

Workers: the usable CPU cores (``os.sched_getaffinity``, else ``os.cpu_count``), capped by the memory
available now divided by one stage's measured peak (PER_STAGE_PEAK_BYTES), at least 1.

Time left: a stage's duration is estimated by its KIND, the DVC stage name before ``@`` (``lt``,
``evaluate``, ``baseline``, ``init``, ``report``): the mean duration of the stages of that kind finished in
this run; for a kind not finished yet, its mean from the previous runs (persisted in STAGE_TIMES, under
DVC's git-ignored ``.dvc/tmp/``), else the mean of all stages finished in this run. A running stage counts
its estimate less the time it has run (never below 0). Time left = max(remaining work / workers, the longest
remaining chain of the DAG): the chain is a lower bound however many workers there are, work / workers the
bound when the workers are the limit.

At the end of a run STAGE_TIMES gets every stage's duration with its kind and, to measure the estimate's
error, what the estimate said at 10 % of the stages done against the time the run really took from there.
"""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Sequence

# Peak memory of one worker's stage: the `dvc repro --single-item` process, the stage it starts and its
# DataLoader worker, proportional set size (PSS: shared pages split, not counted twice) summed over that
# process tree, sampled every 50 ms with psutil; tiny profile, CLASSPRUNE_THREADS=1, each stage alone. The
# default profile has the same model, 64 px, batch 32 and baselines settings, and the stages read images from
# memmaps, so its peaks are about the same. Measured, MiB, PSS sum / RSS sum / largest process:
#   baseline@lobs 1700 / 2157 / 1641 (the per-layer Hessians; the heaviest), baseline@snip_trained 953 / 1544
#   / 1043, pretrain 840 / 971 / 920, init 798 / 1000 / 945, evaluate 715 / 956 / 901, lt round 629-690 /
#   1283 / 786, report 560 / 742 / 689. The heaviest, rounded up: every worker may be running an L-OBS.
PER_STAGE_PEAK_BYTES = 2 << 30
STAGE_TIMES = Path(".dvc") / "tmp" / "classprune-stage-times.json"   # relative to the DVC repository
KEEP_RUNS = 10          # runs kept in STAGE_TIMES
AT_FRACTION = 0.10      # the point of the run whose estimate is compared with the real time left


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask: a container's or taskset's limit)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def machine_workers(cores: int | None = None, available: int | None = None,
                    per_stage: int = PER_STAGE_PEAK_BYTES) -> tuple[int, str]:
    """(workers, why): min(cores, available memory // per_stage), at least 1; ``why`` says what decided."""
    if cores is None:
        cores = usable_cores()
    if available is None:
        import psutil

        available = psutil.virtual_memory().available
    by_memory = available // per_stage
    workers = max(1, min(cores, by_memory))
    return workers, (f"{workers} worker(s): {cores} core(s), memory allows {by_memory} "
                     f"({available / 2**30:.1f} GiB available, {per_stage / 2**30:.1f} GiB per stage)")


def kind(stage_name: str) -> str:
    """``lt@red-0-level1`` (or ``pipelines/seed_0/dvc.yaml:lt@red-0-level1``) -> ``lt``."""
    return stage_name.rsplit(":", 1)[-1].split("@", 1)[0]


class Estimate:
    """Stages done and time left of one run over ``stages`` (objects with ``name`` and ``upstream``, upstream
    first, as flows.dag.load_dag returns them), ``workers`` at a time; ``prior``: seconds per kind."""

    def __init__(self, stages: Sequence, workers: int, prior: dict[str, float] | None = None):
        self.stages = list(stages)
        self.workers = max(1, workers)
        self.prior = dict(prior or {})
        self.finished: dict[str, float | None] = {}    # name -> seconds (None: failed or not run)
        self.trace: list[tuple[int, float, float | None]] = []   # (stages done, seconds elapsed, seconds left)

    @property
    def done(self) -> int:
        return len(self.finished)

    @property
    def total(self) -> int:
        return len(self.stages)

    @property
    def percent(self) -> float:
        return 100.0 * self.done / self.total if self.total else 100.0

    def finish(self, name: str, seconds: float | None) -> None:
        """A stage ended: ``seconds`` it ran, or None when it failed or did not run (no duration to learn)."""
        self.finished[name] = seconds

    def durations(self) -> list[tuple[str, str, float]]:
        """(name, kind, seconds) of the stages that ran, in the order they finished."""
        return [(n, kind(n), s) for n, s in self.finished.items() if s is not None]

    def means(self) -> dict[str, float]:
        """Mean seconds per kind of the stages finished in this run."""
        by_kind: dict[str, list[float]] = {}
        for _, k, s in self.durations():
            by_kind.setdefault(k, []).append(s)
        return {k: sum(v) / len(v) for k, v in by_kind.items()}

    def stage_estimate(self, name: str, means: dict[str, float] | None = None) -> float | None:
        """This run's mean for the stage's kind, else the prior's, else this run's mean over all kinds."""
        means = self.means() if means is None else means
        k = kind(name)
        if k in means:
            return means[k]
        if k in self.prior:
            return self.prior[k]
        seen = [s for _, _, s in self.durations()]
        return sum(seen) / len(seen) if seen else None

    def left(self, running: dict[str, float] | None = None) -> float | None:
        """Seconds left: max(remaining work / workers, longest remaining chain); None with nothing to go by.

        ``running``: seconds each running stage has run so far (subtracted from its estimate)."""
        running = running or {}
        means = self.means()
        todo = [s for s in self.stages if s.name not in self.finished]
        est: dict[str, float] = {}
        for s in todo:
            e = self.stage_estimate(s.name, means)
            if e is None:
                return None
            est[s.name] = max(0.0, e - running.get(s.name, 0.0))
        chain: dict[str, float] = {}     # longest chain of estimates ending with each remaining stage
        for s in todo:                   # upstream first
            chain[s.name] = est[s.name] + max((chain[u] for u in s.upstream if u in chain), default=0.0)
        return max(sum(est.values()) / self.workers, max(chain.values(), default=0.0))

    def progress(self, elapsed: float, running: dict[str, float] | None = None) -> str:
        """The log line after a stage ended (``elapsed``: seconds since the run started); kept in the trace."""
        left = self.left(running) if self.done < self.total else 0.0
        self.trace.append((self.done, elapsed, left))
        failed = sum(s is None for s in self.finished.values())
        return (f"done {self.done} of {self.total} stages, "
                + (f"about {minutes(left)} min left" if left is not None else "time left not known yet")
                + (f" ({failed} failed or not run)" if failed else ""))

    def check(self, elapsed: float, fraction: float = AT_FRACTION) -> dict | None:
        """What the estimate said once ``fraction`` of the stages were done, against the real rest of the run
        (``elapsed``: the run's total seconds); None before such a point or when it had no estimate."""
        point = next(((d, t, left) for d, t, left in self.trace if d >= fraction * self.total), None)
        if point is None or point[2] is None:
            return None
        done, at, left = point
        return {"fraction": fraction, "done": done, "elapsed_s": round(at, 1), "estimate_left_s": round(left, 1),
                "real_left_s": round(elapsed - at, 1)}


def minutes(seconds: float) -> str:
    m = seconds / 60
    return f"{m:.1f}" if m < 10 else f"{m:.0f}"


def summary(est: Estimate, elapsed: float) -> list[str]:
    """The run's closing log lines: mean seconds per kind, and the estimate at 10 % done against the real rest."""
    means = ", ".join(f"{k} {s:.1f} s" for k, s in sorted(est.means().items()))
    lines = [f"{len(est.durations())} stage(s) ran in {minutes(elapsed)} min; mean per kind: {means or '-'}"]
    check = est.check(elapsed)
    if check:
        lines.append(check_line(check))
    return lines


def check_line(check: dict) -> str:
    return (f"estimate at {check['fraction'] * 100:.0f} % done ({check['done']} stages, after "
            f"{minutes(check['elapsed_s'])} min) was {minutes(check['estimate_left_s'])} min left, "
            f"real {minutes(check['real_left_s'])} min")


def load_prior(repo_dir: str | Path) -> dict[str, float]:
    """Seconds per stage kind from the previous runs (STAGE_TIMES); {} when there is none or it is unreadable."""
    try:
        kinds = json.loads((Path(repo_dir) / STAGE_TIMES).read_text()).get("kinds", {})
        return {str(k): float(v) for k, v in kinds.items()}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def save_run(repo_dir: str | Path, est: Estimate, elapsed: float, **info) -> Path:
    """Add this run to STAGE_TIMES: its durations per stage and kind, the 10 % check and the trace; the per-kind
    means of this run replace the prior's (kinds it did not run keep theirs). Only the last KEEP_RUNS runs stay."""
    path = Path(repo_dir) / STAGE_TIMES
    try:
        data = json.loads(path.read_text())
        assert isinstance(data, dict)
    except (OSError, ValueError, AssertionError):
        data = {}
    kinds = {**load_prior(repo_dir), **{k: round(v, 2) for k, v in est.means().items()}}
    run = {"ended": datetime.now(timezone.utc).isoformat(timespec="seconds"), **info, "workers": est.workers, "stages": est.total, "elapsed_s": round(elapsed, 1),
           "check": est.check(elapsed), "durations": [[n, k, round(s, 2)] for n, k, s in est.durations()],
           "trace": [[d, round(t, 1), None if x is None else round(x, 1)] for d, t, x in est.trace]}
    runs = _list(data.get("runs")) + [run]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"kinds": kinds, "runs": runs[-KEEP_RUNS:]}, indent=1))
    tmp.replace(path)
    return path


def _list(value: Iterable | None) -> list:
    return list(value) if isinstance(value, list) else []
