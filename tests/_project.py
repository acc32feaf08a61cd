"""Throw-away git + DVC copies of this repository for end-to-end tests of the flows.

A plain module (not conftest) so that other test files and fixtures can share it without clashing.
The stage scripts import the installed ``classprune`` package; the copy carries ``src/`` only because
dvc.yaml lists its files as dependencies.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPY = ("src", "stages", "dvc.yaml", "pipelines/seed.dvc.yaml", ".dvc", ".dvcignore", "data/raw", "flows")
GIT_ENV = {"GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
           "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com"}


def _ignore(directory: str, names: list[str]) -> set[str]:
    # DVC's cache, locks, state db and local config (a cache.dir of this checkout) belong to the source repo;
    # __pycache__ is noise
    skip = {"__pycache__"} | ({"cache", "tmp", "config.local"} if Path(directory).name == ".dvc" else set())
    return skip & set(names)


def profile_params(name: str = "tiny") -> dict:
    """The repository's params.yaml with profiles/<name>.yaml (an overlay of the keys that differ) applied."""
    from classprune.profiles import merged_params

    return merged_params(name, ROOT / "params.yaml", ROOT / "profiles")


def write_profile(dest: Path, name: str = "tiny") -> Path:
    """params.yaml with a profile applied, written to ``dest`` (a params file)."""
    import yaml

    dest.write_text(yaml.safe_dump(profile_params(name), sort_keys=False))
    return dest


def make_project(dest: Path, params: str | Path = "profiles/tiny.yaml", overrides: dict | None = None) -> Path:
    """Copy the pipeline into ``dest`` with ``params`` as params.yaml, then ``git init`` and commit it.

    ``params``: a profile under profiles/ (merged onto the repository's params.yaml) or a full params file.
    ``overrides``: dotted keys set in the copy's params.yaml (``{"baselines.methods": ["snip"]}``); keys
    whose parent section does not exist are left out, so tests survive params that come and go.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for rel in COPY:
        src = ROOT / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel, ignore=_ignore)
        elif src.exists():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    src_params = (ROOT / params).resolve()
    if src_params.parent == ROOT / "profiles":
        write_profile(dest / "params.yaml", src_params.stem)
    else:
        shutil.copy2(src_params, dest / "params.yaml")
    if overrides:
        set_params(dest / "params.yaml", overrides)
    sync_pipelines(dest)
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "commit", "-qm", "test project")
    return dest


def sync_pipelines(proj: Path) -> None:
    """pipelines/seed_<s>/ for the copy's run.seeds, as ``classprune seeds`` makes them."""
    from classprune.pipelines import run_seeds, sync

    sync(proj, run_seeds(proj))


def stage_name(name: str) -> str:
    """``pipelines/seed_0/dvc.yaml:lt@red-0-level0`` -> ``lt@red-0-level0`` (the name inside its file)."""
    return name.rsplit(":", 1)[-1]


def set_params(path: Path, overrides: dict) -> None:
    import yaml

    data = yaml.safe_load(path.read_text())
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = data
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node[leaf] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def clone_workspace(src: Path, dest: Path) -> Path:
    """A copy of a project *with* its outputs, dvc.lock and DVC cache (not its locks/state db)."""
    def ignore(directory: str, names: list[str]) -> set[str]:
        return {"tmp"} & set(names) if Path(directory) == src / ".dvc" else set()

    shutil.copytree(src, dest, symlinks=True, ignore=ignore)
    return dest


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True,
                          env={**os.environ, **GIT_ENV}).stdout


def dvc(repo: Path, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["dvc", *args], cwd=repo, check=check, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def prefect_server(home: Path, timeout: float = 240):
    """A real ``prefect server start`` on a free 127.0.0.1 port with PREFECT_HOME=home; yields (url, port).

    Inside the block this process (Prefect settings) and its children (environment, e.g. Dask workers)
    talk to that server. Analytics off; nothing leaves the machine. ``timeout`` covers the migration of a
    fresh database on a busy machine (another test file may run beside this one: ``make test`` runs two).
    """
    import pytest
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "1", "PREFECT_UI_API_URL": url}   # else the UI calls the default port 4200
    env.pop("PREFECT_API_URL", None)
    with open(home / "server.log", "w") as log:
        server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                   "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not _healthy(url):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Prefect server did not start: {(home / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        if server.poll() is not None:   # healthy, but not ours: another server took the port first
            raise RuntimeError(f"Prefect server exited: {(home / 'server.log').read_text()[-2000:]}")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("PREFECT_API_URL", url)
            mp.setenv("PREFECT_HOME", str(home))
            with temporary_settings({PREFECT_API_URL: url, PREFECT_HOME: str(home)}):
                try:
                    yield url, port
                finally:
                    from prefect.logging.handlers import APILogWorker

                    APILogWorker.drain_all(timeout=10)   # send buffered run logs while the server is up
    finally:
        os.killpg(server.pid, 15)   # its own session: the server and the services it started
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def build_tiny_cache(root: Path, n_positive: int = 10, n_negative: int = 30) -> Path:
    """A decoded cache of a few synthetic 64 px images (train/val/test 3:1:1), built by the real code."""
    import numpy as np

    from classprune.data.cache import build_cache
    from classprune.data.synthetic import generate

    index = generate(root / "raw", n_positive=n_positive, n_negative=n_negative, image_size=64, seed=0)
    rank = index.groupby("label").cumcount() % 5
    index["split"] = np.select([rank == 3, rank == 4], ["val", "test"], "train")
    build_cache(index, root / "cache", 64, workers=1)
    return root / "cache"
