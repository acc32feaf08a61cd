"""Prefect's temporary server on a fresh machine: its database made before a flow waits for the server.

Without PREFECT_API_URL, a flow run starts Prefect's temporary (ephemeral) server and waits
``server.ephemeral.startup_timeout_seconds`` (20 s by default) for it to answer. The first start on a
machine also creates PREFECT_HOME/prefect.db and runs all of Prefect's migrations (over a hundred) before
the server answers; on a slow or loaded 2-core machine that takes longer than 20 s and the run fails with
``RuntimeError: Timed out while attempting to connect to ephemeral Prefect API server.`` (issue 28), while
the second run passes because the database then exists.

``ensure_local_server_ready()`` is called by the entry points that may start that server
(``flows.fanout.main``, ``flows.pipeline.main``; ``make repro`` and ``classprune run`` go through the
former) before their flow. When no API URL is configured it:

1. migrates the database the way Prefect documents it, ``prefect server database upgrade -y`` (a
   subprocess with this interpreter and the current settings), before any flow starts, so that no
   start-up wait applies to it; only when the database is missing or behind the installed Prefect's
   migrations (its ``alembic_version`` table against the heads of Prefect's migration scripts: a few ms
   when it is current). Concurrent first runs take turns on a lock file next to the database.
2. raises the start-up wait to STARTUP_TIMEOUT_S unless the user set it (environment, Prefect profile or
   prefect.toml), through the environment and a refresh of Prefect's global settings: ``flows`` modules
   import Prefect first, which reads its settings then.

With a configured server (PREFECT_API_URL, e.g. ``make ui``) it does nothing: that server keeps its own
database. Databases other than SQLite (a PostgreSQL connection URL) are left to Prefect.
"""
from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

# 120 s, from starts of the temporary server measured on the 2-core dev VM: warm (database current) 4-5 s
# idle and 24 s with 6 busy processes competing for the 2 cores, which already fails Prefect's 20 s; cold
# (every migration inside the wait, if the migration here could not run) 8 s idle and 59 s so loaded. 120 s
# is 5x the loaded warm start and 2x the loaded cold one. A longer wait costs time only when the server
# cannot start at all: Prefect then reports it after the wait instead of after 20 s.
STARTUP_TIMEOUT_S = 120
TIMEOUT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"


def ensure_local_server_ready() -> None:
    """Before a flow starts Prefect's temporary server: its SQLite database migrated, a start-up wait sized
    for a slow machine. Nothing when an API URL is configured or the temporary server is disabled."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled:
        return
    settings = _raise_startup_timeout(settings)
    db = sqlite_path(settings)
    if db is not None and not database_current(db):
        _migrate(db, settings)


def _raise_startup_timeout(settings):
    if "startup_timeout_seconds" in settings.server.ephemeral.model_fields_set:
        return settings   # the user's value, from the environment, a profile or prefect.toml
    os.environ[TIMEOUT_ENV] = str(STARTUP_TIMEOUT_S)
    from prefect.context import refresh_global_settings_context
    from prefect.settings import get_current_settings

    refresh_global_settings_context()   # Prefect read its settings when it was imported
    return get_current_settings()


def sqlite_path(settings) -> Path | None:
    """The file of the server's SQLite database (PREFECT_HOME/prefect.db by default); None for another one."""
    url = settings.server.database.connection_url
    url = url.get_secret_value() if hasattr(url, "get_secret_value") else url
    prefix = "sqlite+aiosqlite:///"
    if not url or not url.startswith(prefix) or ":memory:" in url:
        return None
    return Path(url[len(prefix):].split("?", 1)[0])


def migration_heads() -> set[str]:
    """The head revisions of the installed Prefect's SQLite migrations, read from the scripts' text."""
    import prefect

    versions = Path(prefect.__file__).parent / "server" / "database" / "_migrations" / "versions" / "sqlite"
    revisions, parents = set(), set()
    for script in versions.glob("*.py"):
        text = script.read_text(encoding="utf-8")
        rev = re.search(r"^revision\s*=\s*['\"](\w+)['\"]", text, re.M)
        down = re.search(r"^down_revision\s*=\s*(.*)$", text, re.M)
        if rev:
            revisions.add(rev.group(1))
        if down:
            parents.update(re.findall(r"['\"](\w+)['\"]", down.group(1)))
    return revisions - parents


def database_current(db: Path) -> bool:
    """Whether ``db`` exists and is at the installed Prefect's migration heads (False on any doubt)."""
    if not db.is_file():
        return False
    try:
        with contextlib.closing(sqlite3.connect(db, timeout=10)) as con:
            stamped = {row[0] for row in con.execute("SELECT version_num FROM alembic_version")}
    except sqlite3.Error:
        return False
    heads = migration_heads()
    return bool(heads) and stamped == heads


def _migrate(db: Path, settings) -> None:
    from prefect.logging import get_logger
    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()   # done by `from prefect import flow`; not by a bare `import prefect`
    log = get_logger("classprune")
    where = _shown(db)
    db.parent.mkdir(parents=True, exist_ok=True)
    with _lock(db.with_name(db.name + ".migrate.lock")):
        if database_current(db):   # another run made it while this one waited
            return
        what = ("upgrading the local database " + where + " (Prefect was updated)" if db.is_file() else
                "creating the local database " + where + " (first run on this machine)")
        log.info(f"Prefect: {what}: its migrations take about 10 s, up to a minute on a busy 2-core machine; "
                 f"then the temporary server gets {settings.server.ephemeral.startup_timeout_seconds} s to start")
        t0 = time.monotonic()
        env = {**os.environ, **settings.to_environment_variables(exclude_unset=True)}
        proc = subprocess.run([sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode:
        tail = " | ".join(proc.stdout.strip().splitlines()[-3:])
        log.warning(f"Prefect: `prefect server database upgrade -y` failed (exit {proc.returncode}): {tail}; "
                    "the temporary server migrates it itself")
        return
    log.info(f"Prefect: local database ready in {time.monotonic() - t0:.0f} s")


def _shown(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    return str(path)


@contextlib.contextmanager
def _lock(path: Path):
    """An exclusive flock on ``path`` (released when the process dies); no lock where fcntl is missing."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
