"""The DVC stage graph as plain data: stage names, upstream edges, what is out of date.

DVC has no parallel ``dvc repro``; the flows run one ``dvc repro --single-item`` per stage, so they need
the DAG that DVC itself builds from dvc.yaml (``repo.index.graph``), never a copy of it.
``prefetch_dag`` starts reading it in another process; ``take_dag`` is the flow's way to get it.
"""
from __future__ import annotations

import contextlib
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Stage:
    name: str                                  # DVC's addressing from the root, e.g. ``report`` or
                                               # ``pipelines/seed_0/dvc.yaml:lt@red-0-level0``
    cmd: str
    upstream: tuple[str, ...] = ()             # stages whose outputs this one reads
    changed: bool = True                       # out of date (DVC status) or downstream of a stage that is
    args: dict = field(default_factory=dict)   # --scenario/--method/--seed/--round parsed from cmd

    @property
    def short(self) -> str:
        """The name inside its pipeline file: ``lt@red-0-level0``."""
        return self.name.rsplit(":", 1)[-1]

    @property
    def base(self) -> str:
        """Name before the ``@`` of foreach/matrix stages: ``lt``."""
        return self.short.split("@", 1)[0]

    @property
    def label(self) -> str:
        """Readable summary: ``lt red s0 r1`` (round k; the stage name says level0)."""
        a = self.args
        parts = [self.base, a.get("scenario"), a.get("method"), f"s{a['seed']}" if "seed" in a else None,
                 f"r{a['round']}" if "round" in a else None]
        return " ".join(p for p in parts if p)


def _cmd_args(cmd: str | list) -> dict:
    """--scenario/--method X --seed S --round K from a stage command (the stage scripts' own flags)."""
    words = shlex.split(" ".join(cmd) if isinstance(cmd, list) else cmd)
    out = {}
    for flag, value in zip(words, words[1:]):
        if flag in ("--scenario", "--method", "--seed", "--round"):
            out[flag[2:]] = value
    return out


def _matches(stage: Stage, target: str) -> bool:
    """A target is a stage name (``lt@red-0-level0``, with or without its file), a stage base name (``lt``),
    a scenario or a method."""
    return target in (stage.name, stage.short, stage.base, stage.args.get("scenario"), stage.args.get("method"))


def load_dag(repo_dir: str | Path = ".", targets: list[str] | None = None,
             include_up_to_date: bool = False) -> list[Stage]:
    """Stages in topological order (upstream first), restricted to ``targets`` and everything upstream.

    ``pipelines/seed_<s>/`` is made to follow run.seeds first (classprune.pipelines). Up-to-date stages are
    dropped as ``dvc repro`` would skip them: a stage is kept when DVC's status says
    it changed or when one of its kept upstream stages will run (its inputs are about to change). One Repo
    and one ``repo.status`` call: the status is the expensive part (it hashes dependencies).
    """
    import networkx as nx
    from dvc.repo import Repo, lock_repo

    from classprune import pipelines

    root = Path(repo_dir).resolve()
    # the per-seed pipeline files follow run.seeds before DVC reads them (idempotent)
    pipelines.sync(root, pipelines.run_seeds(root))
    # one repo lock around graph and status: DVC builds its index once (each locked call would rebuild
    # it), and the two see the same dvc.yaml and dvc.lock
    with Repo(str(root)) as repo, lock_repo(repo):
        graph = repo.index.graph                      # edges point from a stage to its dependencies
        # Upstream first; among stages free to start, the longest remaining chain first (train before
        # evaluate), then dvc.yaml order: the flow submits ready stages in this order.
        pos = {s: i for i, s in enumerate(repo.index.stages)}
        height: dict = {}
        for s in nx.topological_sort(graph):          # dependents before their dependencies
            height[s] = 1 + max((height[d] for d in graph.predecessors(s)), default=0)
        order = list(nx.lexicographical_topological_sort(graph.reverse(copy=False),
                                                         key=lambda s: (-height[s], pos[s])))
        name = {s: _name(s, root) for s in order}
        stages = {name[s]: Stage(name[s], s.cmd, tuple(sorted(name[u] for u in graph.successors(s))),
                                 args=_cmd_args(s.cmd or ""))
                  for s in order}
        names = [name[s] for s in order]
        if targets:
            unknown = [t for t in targets if not any(_matches(s, t) for s in stages.values())]
            if unknown:
                raise ValueError(f"unknown targets {unknown}: not a stage, stage group, scenario or method of dvc.yaml")
            keep = _with_upstream(stages, {n for n in names if any(_matches(stages[n], t) for t in targets)})
            names = [n for n in names if n in keep]
        by_addressing = {s.addressing: name[s] for s in order}    # DVC's keys are relative to the cwd
        # all stages in one pass: cheaper than status(targets=...), which re-collects per target
        changed = {by_addressing.get(k, k) for k in repo.status()} if names else set()
    out: list[Stage] = []
    running: set[str] = set()
    for n in names:
        s = stages[n]
        is_changed = n in changed or any(u in running for u in s.upstream)
        if is_changed:
            running.add(n)
        if is_changed or include_up_to_date:
            kept = running if not include_up_to_date else set(names)
            out.append(Stage(n, s.cmd, tuple(u for u in s.upstream if u in kept), is_changed, s.args))
    return out


def _name(stage, root: Path) -> str:
    """The stage name for ``dvc repro`` run in the repo root: ``name``, or ``sub/dvc.yaml:name``."""
    rel = Path(stage.path).resolve().relative_to(root).as_posix()
    if not getattr(stage, "name", None):
        return rel                                  # a .dvc file
    return stage.name if rel == "dvc.yaml" else f"{rel}:{stage.name}"


def _with_upstream(stages: dict[str, Stage], keep: set[str]) -> set[str]:
    todo, seen = list(keep), set(keep)
    while todo:
        for u in stages[todo.pop()].upstream:
            if u not in seen:
                seen.add(u)
                todo.append(u)
    return seen


# (repo, targets) -> (params.yaml's bytes then, Future of load_dag), started by prefetch_dag
_PREFETCHED: dict[tuple, tuple[bytes, object]] = {}


def _dag_key(repo_dir: str, targets: list[str] | None) -> tuple:
    return str(Path(repo_dir).resolve()), tuple(targets or ())


def _params_bytes(repo_dir: str) -> bytes:
    """The stage graph follows params.yaml (scenarios, seeds): a prefetched graph holds only while it is unchanged."""
    path = Path(repo_dir) / "params.yaml"
    return path.read_bytes() if path.is_file() else b""


def prefetch_dag(repo_dir: str, targets: list[str] | None) -> None:
    """Start DVC's status check (seconds: it hashes every dependency) in a forked process now, so that it
    runs beside the temporary Prefect server's start-up instead of after it (a thread would share the GIL
    with that start-up); the flow takes the result."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("fork") if sys.platform == "linux" else None  # elsewhere: spawn
    pool = ProcessPoolExecutor(1, mp_context=context)
    _PREFETCHED[_dag_key(repo_dir, targets)] = _params_bytes(repo_dir), pool.submit(load_dag, repo_dir, targets)
    pool.shutdown(wait=False)


def take_dag(repo_dir: str, targets: list[str] | None) -> list[Stage]:
    """load_dag's answer: the prefetched one when params.yaml is unchanged since, else read now."""
    params, future = _PREFETCHED.pop(_dag_key(repo_dir, targets), (None, None))
    if future is not None and params == _params_bytes(repo_dir):
        with contextlib.suppress(Exception):  # a failure is raised again, unpickled, by the call below
            return future.result()
    return load_dag(repo_dir, targets)
