"""Serve the fan-out flow so that runs are started, and re-parameterised, from the Prefect UI.

``python -m flows.serve`` (with ``make ui`` running and PREFECT_API_URL set) registers the deployment
``classprune-fanout/classprune`` and runs what the UI starts in this process: Deployments ->
classprune -> Run -> Custom run sets scenarios, seeds, workers, threads. Stop it with Ctrl-C.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import flows  # noqa: F401 - PREFECT_HOME default before Prefect is imported

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__.split("\n")[0])
    p.add_argument("--name", default="classprune", help="deployment name (default: classprune)")
    p.add_argument("--workers", type=int, default=None,
                   help="default workers of a run started from the UI (default: the usable cores, capped by memory)")
    p.add_argument("--limit", type=int, default=1, help="runs at once (default 1: they share the workspace)")
    a = p.parse_args(argv)
    if not os.environ.get("PREFECT_API_URL"):
        p.exit(2, f"{p.prog}: error: set PREFECT_API_URL to a running server first "
                  "(make ui; export PREFECT_API_URL=http://127.0.0.1:4200/api)\n")
    os.chdir(REPO)   # the served runs load flows/fanout.py relative to here
    from flows.fanout import classprune_fanout

    classprune_fanout.serve(name=a.name, limit=a.limit, parameters={"workers": a.workers, "repo_dir": str(REPO)},
                            description="classprune: scenarios x seeds through the DVC pipeline; params.yaml "
                                        "is restored afterwards")
    return 0


if __name__ == "__main__":
    sys.exit(main())
