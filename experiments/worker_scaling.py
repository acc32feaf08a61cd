"""What a machine with more cores should expect from `make repro`: the flow's scheduling replayed on the
measured stage durations of a finished run (.dvc/tmp/classprune-stage-times.json, written by the flow).

The replay is the flow's own rule: ready stages start in the DAG's priority order (upstream first, longest
remaining chain first) as workers free up, each stage taking the seconds it took in the measured run. That
assumes a stage runs as fast on a bigger machine as it did here (one torch thread each, so more workers do
not share a core), and ignores the per-stage start-up that DVC's lock serialises. It prints the wall time per
worker count, the total stage time and the critical path (the longest chain: no worker count beats it).

    python experiments/worker_scaling.py [--workers 1 2 4 8 16] [--run -1]
"""
from __future__ import annotations

import argparse
import heapq
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


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


def critical_path(stages, seconds: dict[str, float]) -> float:
    chain: dict[str, float] = {}
    for s in stages:
        chain[s.name] = seconds.get(s.name, 0.0) + max((chain[u] for u in s.upstream if u in chain), default=0.0)
    return max(chain.values(), default=0.0)


def main(argv=None) -> int:
    from flows.dag import load_dag
    from flows.progress import STAGE_TIMES

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--run", type=int, default=-1, help="which recorded run (default: the last)")
    a = p.parse_args(argv)
    run = json.loads((ROOT / STAGE_TIMES).read_text())["runs"][a.run]
    seconds = {n: s for n, _, s in run["durations"]}
    stages = [s for s in load_dag(ROOT, include_up_to_date=True) if s.name in seconds]
    total, cp = sum(seconds.values()), critical_path(stages, seconds)
    print(f"measured run: {len(seconds)} stages, {run['workers']} workers, wall {run['elapsed_s'] / 60:.1f} min; "
          f"stage time {total / 60:.1f} min in all, critical path {cp / 60:.1f} min")
    for w in a.workers:
        print(f"  {w:>2} workers: {replay(stages, seconds, w) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
