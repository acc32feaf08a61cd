"""What a machine with more cores should expect from `make repro`: the flow's scheduling replayed on the
measured stage durations of a finished run (.dvc/tmp/classprune-stage-times.json, written by the flow).

The replay is the flow's own rule: ready stages start in the DAG's priority order (upstream first, longest
remaining chain first) as workers free up, each stage taking the seconds it took in the measured run. That
assumes a stage runs as fast on a bigger machine as it did here (one torch thread each, so more workers do
not share a core). It prints the wall time per worker count, the total stage time and the critical path (the
longest chain: no worker count beats it).

DVC's repository lock. Each stage is one ``dvc --wait-for-lock repro --single-item`` whose bookkeeping runs
under DVC's repository lock (.dvc/tmp/lock), one process at a time across all workers: it takes the lock to
read dvc.yaml and the stage's lock file and check the deps, releases it while the command runs, and takes it
again to save the outputs and rewrite the lock file. With the lock, a stage is: DVC's unlocked start-up, the
locked part before its command, the command, the locked part after it. The locked seconds (before/after)
and DVC's whole part per stage come from benchmarks/bench_dvc_bookkeeping.py's reports/bench_dvc_bookkeeping.json
(the 5-seed study by default: 206 stages like the default), for the old layout (one dvc.yaml and dvc.lock for
every seed, git 11e35d5) and the new one (one per seed): a seed stage takes the forced ``init`` stage's
numbers (its lock file is the seed's one, or everything in the old layout), a shared stage the forced
``report``'s. The command's own seconds are the measured duration less DVC's part in the layout the run was
measured under (its stage names say which); a layout's stage is then that command plus the layout's DVC part.
Workers queue for the lock as DVC does: ``--wait-for-lock`` retries every 0.5 s (DEFAULT_TIMEOUT / 6 in
dvc/lock.py), so a released lock goes to the first waiter whose retry comes next, not to the first in line.
Printed per worker count: the replay of the measured durations as they are (no lock), each layout with its
lock serialised (and, for comparison, the same durations without contention), and the bound the lock alone
sets: stages x locked seconds per stage, whatever the number of workers.

What the projection leaves out: the measured durations already include the contention of their own run (the
workers sharing cores, memory bandwidth and disk, and lock waits of that run's layout), so they are not
one-stage-alone times; the bookkeeping numbers are the tiny profile's (its outputs are small: hashing the
default's larger model files adds unlocked and locked seconds alike); DVC's own work outside the lock is
assumed to run in parallel without slowing down; the disk (fsync of every rewritten lock file, DVC's cache
copies) and memory (2 GiB per worker) are not modelled; Prefect's own overhead per task is not either.

    python experiments/worker_scaling.py [--workers 1 2 4 8 16] [--run -1] [--times PATH] [--fill]
        [--bookkeeping reports/bench_dvc_bookkeeping.json] [--bookkeeping-seeds 5]
"""
from __future__ import annotations

import argparse
import heapq
import json
import math
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BOOKKEEPING = ROOT / "reports" / "bench_dvc_bookkeeping.json"
POLL_S = 0.5          # dvc.lock.Lock.lock with wait: retries every DEFAULT_TIMEOUT (3 s) / 6


def replay(stages, seconds: dict[str, float], workers: int) -> float:
    """Wall seconds of list scheduling ``stages`` (upstream first, priority order) on ``workers``."""
    done_at: dict[str, float] = {}
    pending = list(stages)
    clock, running = 0.0, []          # heap of (finish time, name)
    while pending or running:
        started = True
        while started and pending:
            started = False
            for s in pending:
                if len(running) < workers and all(u in done_at and done_at[u] <= clock for u in s.upstream):
                    heapq.heappush(running, (clock + seconds.get(s.name, 0.0), s.name))
                    pending.remove(s)
                    started = True
                    break
        t, name = heapq.heappop(running)
        clock, done_at[name] = t, t
    return clock


def replay_locked(stages, phases: dict[str, list[tuple[bool, float]]], workers: int, poll: float = POLL_S) -> float:
    """Wall seconds of the same list scheduling where each stage is a list of phases ``(locked, seconds)`` and
    the locked phases of all stages take turns on one lock, handed on as DVC's polling waiters take it: when
    the lock is released, the waiter whose next retry (every ``poll`` s since it started waiting) comes first
    gets it; a stage arriving while the lock is free takes it at once. A stage holds its worker throughout."""
    done_at: dict[str, float] = {}
    pending = list(stages)
    events: list = []                 # heap of (time, seq, kind, payload)
    seq = 0
    holder: str | None = None
    waiters: dict[str, float] = {}    # name -> when it started waiting
    grant_token = 0                   # invalidates a scheduled hand-on when someone took the lock first
    step: dict[str, int] = {}         # name -> index of its current phase
    running = 0
    clock = 0.0

    def push(t, kind, payload):
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, seq, kind, payload))

    def begin(name: str, t: float) -> None:
        nonlocal running, holder, grant_token
        i = step[name]
        ph = phases.get(name, [])
        if i == len(ph):
            done_at[name] = t
            running -= 1
            return
        locked, secs = ph[i]
        if not locked:
            push(t + secs, "end", name)
        elif holder is None:
            holder, grant_token = name, grant_token + 1
            push(t + secs, "end", name)
        else:
            waiters[name] = t

    def release(t: float) -> None:
        nonlocal holder
        holder = None
        if waiters:
            def next_try(w):  # the first retry at or after t
                return w + poll * math.ceil((t - w) / poll - 1e-9) if poll > 0 else t
            name = min(waiters, key=lambda n: (next_try(waiters[n]), waiters[n]))
            push(next_try(waiters[name]), "grant", (grant_token, name))

    def start_ready(t: float) -> None:
        nonlocal running
        started = True
        while started and pending and running < workers:
            started = False
            for s in pending:
                if all(u in done_at and done_at[u] <= t for u in s.upstream):
                    pending.remove(s)
                    running += 1
                    step[s.name] = 0
                    begin(s.name, t)
                    started = True
                    break

    start_ready(0.0)
    while events:
        clock, _, kind, payload = heapq.heappop(events)
        if kind == "grant":
            token, name = payload
            if token != grant_token or holder is not None or name not in waiters:
                continue
            del waiters[name]
            holder, grant_token = name, grant_token + 1
            push(clock + phases[name][step[name]][1], "end", name)
            continue
        name = payload
        if phases[name][step[name]][0]:
            release(clock)
        step[name] += 1
        begin(name, clock)
        start_ready(clock)
        if holder is None and waiters and not any(k == "grant" and p[0] == grant_token for _, _, k, p in events):
            release(clock)            # a stage that took the free lock and left it: hand it on
    return clock


def critical_path(stages, seconds: dict[str, float]) -> float:
    chain: dict[str, float] = {}
    for s in stages:
        chain[s.name] = seconds.get(s.name, 0.0) + max((chain[u] for u in s.upstream if u in chain), default=0.0)
    return max(chain.values(), default=0.0)


def _short(name: str) -> str:
    """``pipelines/seed_0/dvc.yaml:init@red-0`` -> ``init@red-0``: stage names of either layout (unique)."""
    return name.rsplit(":", 1)[-1]


SEED_STAGE = re.compile(r"^(\w+)@([A-Za-z_]+)-(\d+)(-level\d+)?$")


def fill_keys(short: str) -> list[str]:
    """Keys a stage missing from the run is estimated by, most specific first: the same stage of another seed
    (``lt@red-level3``), the same kind and round (``lt-level3``), the kind (``lt``)."""
    m = SEED_STAGE.match(short)
    if not m:
        return [short]
    base, what, _, level = m.groups()
    return [f"{base}@{what}{level or ''}", f"{base}{level or ''}", base]


def fill_missing(stages, seconds: dict[str, float]) -> tuple[dict[str, float], int]:
    """``seconds`` for every stage of ``stages``: a missing one takes the mean of the measured stages sharing
    its most specific fill key (a run of fewer seeds or scenarios projected onto the whole study)."""
    by_key: dict[str, list[float]] = {}
    for n, s in seconds.items():
        for k in fill_keys(_short(n)):
            by_key.setdefault(k, []).append(s)
    out, filled = {}, 0
    for st in stages:
        if st.name in seconds:
            out[st.name] = seconds[st.name]
            continue
        for k in fill_keys(_short(st.name)):
            if k in by_key:
                out[st.name], filled = statistics.mean(by_key[k]), filled + 1
                break
    return out, filled


def load_bookkeeping(path: Path, seeds: int) -> dict[str, dict[str, dict[str, float]]]:
    """{layout: {"seed": phases, "shared": phases}} from bench_dvc_bookkeeping's JSON at ``seeds`` seeds;
    phases: DVC's whole part (dvc_wall_s), the locked seconds before and after the command."""
    data = json.loads(path.read_text())
    results = data.get("details", {}).get("results", [])
    have = sorted({r["seeds"] for r in results})
    if seeds not in have:
        raise SystemExit(f"error: {path} has no {seeds}-seed study (it has {have}); run "
                         "benchmarks/bench_dvc_bookkeeping.py or pass --bookkeeping-seeds")
    out: dict[str, dict[str, dict[str, float]]] = {}
    for layout in ("old", "new"):
        by_stage = {r["stage"]: r["median"] for r in results if r["layout"] == layout and r["seeds"] == seeds}
        seed = by_stage.get("init") or next(iter(by_stage.values()))
        shared = by_stage.get("report", seed)
        out[layout] = {k: {"dvc": m["dvc_wall_s"], "before": m["locked_before_s"], "after": m["locked_after_s"]}
                       for k, m in (("seed", seed), ("shared", shared))}
    return out


def is_seed_stage(name: str) -> bool:
    return bool(SEED_STAGE.match(_short(name)))


def layout_phases(stages, seconds: dict[str, float], book, measured: str, layout: str):
    """Per stage: the phases in ``layout`` (command = measured seconds less ``measured``'s DVC part)."""
    phases, free = {}, {}
    for st in stages:
        kind = "seed" if is_seed_stage(st.name) else "shared"
        m, b = book[measured][kind], book[layout][kind]
        cmd = max(0.0, seconds[st.name] - m["dvc"])
        unlocked = max(0.0, b["dvc"] - b["before"] - b["after"])
        phases[st.name] = [(False, unlocked), (True, b["before"]), (False, cmd), (True, b["after"])]
        free[st.name] = unlocked + b["before"] + cmd + b["after"]
    return phases, free


def measured_layout(names) -> str:
    """The layout the run was measured under: its seed stages are named ``pipelines/seed_<s>/dvc.yaml:...``
    (new) or plainly (old, one dvc.yaml)."""
    return "new" if any(n.startswith("pipelines/") for n in names) else "old"


def main(argv=None) -> int:
    from flows.dag import load_dag
    from flows.progress import STAGE_TIMES

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--run", type=int, default=-1, help="which recorded run (default: the last)")
    p.add_argument("--times", type=Path, default=ROOT / STAGE_TIMES,
                   help=f"the flow's stage times (default: {STAGE_TIMES}, written by the last flow run here)")
    p.add_argument("--fill", action="store_true", help="stages of the DAG the run did not have take the mean of "
                   "the same stage in other seeds, else of their kind (a smaller run projected onto the study)")
    p.add_argument("--bookkeeping", type=Path, default=BOOKKEEPING, help="bench_dvc_bookkeeping's JSON")
    p.add_argument("--bookkeeping-seeds", type=int, default=5, help="its study size to take (default 5, the default's)")
    p.add_argument("--measured-layout", choices=("old", "new"), help="layout of the measured run (default: from "
                   "its stage names)")
    p.add_argument("--poll", type=float, default=POLL_S, help="DVC's lock retry interval (0: first come, first served)")
    a = p.parse_args(argv)
    if not a.times.is_file():
        raise SystemExit(f"error: no stage times at {a.times}: run the flow (make repro writes them) or pass --times")
    run = json.loads(a.times.read_text())["runs"][a.run]
    measured_seconds = {n: s for n, _, s in run["durations"]}
    by_short = {_short(n): s for n, s in measured_seconds.items()}        # either layout's names
    dag = load_dag(ROOT, include_up_to_date=True)
    seconds = {s.name: by_short[_short(s.name)] for s in dag if _short(s.name) in by_short}
    filled = 0
    if a.fill:
        seconds, filled = fill_missing(dag, seconds)
    stages = [s for s in dag if s.name in seconds]
    total, cp = sum(seconds.values()), critical_path(stages, seconds)
    print(f"measured run: {len(measured_seconds)} stages, {run['workers']} workers, wall {run['elapsed_s'] / 60:.1f} min; "
          f"replayed on {len(stages)} of the DAG's {len(dag)} stages" + (f" ({filled} filled from the run's means)"
                                                                          if filled else "")
          + f"; stage time {total / 60:.1f} min in all, critical path {cp / 60:.1f} min")
    book = None
    if a.bookkeeping.is_file():
        book = load_bookkeeping(a.bookkeeping, a.bookkeeping_seeds)
    else:
        print(f"(no {a.bookkeeping}: run benchmarks/bench_dvc_bookkeeping.py for the lock columns)")
    if book is None:
        for w in a.workers:
            print(f"  {w:>2} workers: {replay(stages, seconds, w) / 60:.1f} min")
        return 0

    measured = a.measured_layout or measured_layout(measured_seconds)
    n_seed = sum(is_seed_stage(s.name) for s in stages)
    n_shared = len(stages) - n_seed
    print(f"DVC's part per stage ({a.bookkeeping.relative_to(ROOT) if a.bookkeeping.is_relative_to(ROOT) else a.bookkeeping}"
          f", {a.bookkeeping_seeds}-seed study, tiny data; the run's stage times are taken as measured under the "
          f"{measured} layout):")
    bounds = {}
    for layout in ("old", "new"):
        b = book[layout]
        lock_s = n_seed * (b["seed"]["before"] + b["seed"]["after"]) + n_shared * (b["shared"]["before"] + b["shared"]["after"])
        bounds[layout] = lock_s
        print(f"  {layout}: seed stage {b['seed']['dvc']:.2f} s, locked {b['seed']['before']:.2f} before + "
              f"{b['seed']['after']:.2f} after its command; shared stage {b['shared']['dvc']:.2f} s, locked "
              f"{b['shared']['before']:.2f} + {b['shared']['after']:.2f}; lock bound {n_seed} x "
              f"{b['seed']['before'] + b['seed']['after']:.2f} s + {n_shared} x "
              f"{b['shared']['before'] + b['shared']['after']:.2f} s = {lock_s / 60:.1f} min")
    sims = {layout: layout_phases(stages, seconds, book, measured, layout) for layout in ("old", "new")}
    print(f"  {'workers':>7}  {'no lock':>8}  {'old: lock':>9} {'(free)':>7}  {'new: lock':>9} {'(free)':>7}   min; "
          "(free): the layout's stage times, lock not serialised")
    for w in a.workers:
        cells = [f"{w:>7}", f"{replay(stages, seconds, w) / 60:>8.1f}"]
        for layout in ("old", "new"):
            phases, free = sims[layout]
            cells.append(f"{replay_locked(stages, phases, w, a.poll) / 60:>9.1f} {replay(stages, free, w) / 60:>7.1f}")
        print("  " + "  ".join(cells))
    print(f"  lock bound (any workers): old {bounds['old'] / 60:.1f} min, new {bounds['new'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
