"""Issue 28: dvc.lock is written atomically (src/classprune/dvc_atomic.py), so a kill -9 during DVC's lock
dump leaves the old, complete dvc.lock instead of an empty or truncated one.

Fast: the patch is active in a fresh interpreter of the venv (and start-up imports no DVC), the guard
against a DVC upgrade, and the atomic write itself. Slow: ``dvc repro`` in a throw-away git + DVC repo with
300 stages, SIGKILLed inside the lock dump at eight offsets. With ``CLASSPRUNE_DVC_ATOMIC=0`` (stock DVC)
the kill test fails, which is the bug.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

import classprune.dvc_atomic as atomic

sys.path.insert(0, str(Path(__file__).parent))
from _project import GIT_ENV, git  # noqa: E402

BIN = Path(sys.executable).parent      # the venv's bin: its python and its `dvc` console script
SERIALIZE_MODULES = ("_common", "_yaml", "_json", "_toml", "_py")


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "python"), "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


# --- activation ---------------------------------------------------------------------------------------


def test_the_pth_and_its_trigger_are_installed_and_current():
    site = Path(_python("import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    hint = "run `make install` (or python -c 'import classprune.dvc_atomic as m; m.install_pth()')"
    assert (site / atomic.PTH_NAME).read_text() == atomic.PTH_LINE, hint
    assert (site / f"{atomic.TRIGGER_MODULE}.py").read_text() == atomic.TRIGGER_SOURCE, hint


def test_the_patch_is_active_in_a_fresh_interpreter_of_the_venv():
    code = ("import sys, classprune.dvc_atomic as a\n"
            f"mods = {SERIALIZE_MODULES!r}\n"
            "import dvc.utils.serialize\n"
            "print(' '.join(f'{m}={sys.modules[\"dvc.utils.serialize.\" + m]._dump_data is a.atomic_dump_data}'"
            " for m in mods))\n"
            "print(any('ClassPruneDvcAtomic' in type(f).__name__ for f in sys.meta_path))\n")
    proc = _python(code)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    bindings, trigger_left = proc.stdout.split("\n")[:2]
    assert bindings == " ".join(f"{m}=True" for m in SERIALIZE_MODULES)
    assert trigger_left == "False", "the trigger leaves sys.meta_path once DVC is patched"
    # the console script runs this same interpreter, so the same .pth patches it (the kill test runs it)
    assert (BIN / "dvc").read_text().splitlines()[0] == f"#!{BIN / 'python'}"


def test_start_up_imports_neither_dvc_nor_classprune():
    code = ("import sys; print(sorted(m for m in sys.modules if m.split('.')[0] in ('dvc', 'classprune')));"
            "print([type(f).__name__ for f in sys.meta_path])")
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    imported, finders = proc.stdout.splitlines()
    assert imported == "[]"
    assert finders.count("ClassPruneDvcAtomicTrigger") == 1, finders   # once, though site runs the .pth twice


def test_the_switch_turns_the_patch_off():
    code = ("import dvc.utils.serialize._yaml as y, classprune.dvc_atomic as a;"
            "print(y._dump_data is a.original_dump_data(), y._dump_data is a.atomic_dump_data)")
    proc = _python(code, CLASSPRUNE_DVC_ATOMIC="0")
    assert proc.stdout.split() == ["True", "False"], proc.stderr


def test_a_broken_patch_module_never_breaks_dvc(tmp_path):
    """A classprune.dvc_atomic that fails to import (here a stand-in package first on sys.path) costs one
    line on stderr; DVC imports and writes as stock DVC."""
    (tmp_path / "classprune").mkdir()
    (tmp_path / "classprune" / "__init__.py").write_text("")
    (tmp_path / "classprune" / "dvc_atomic.py").write_text("def broken(:\n")
    code = ("import dvc.utils.serialize._yaml as y, dvc.utils.serialize._common as c;"
            "print(y._dump_data is c._dump_data, y._dump_data.__module__)")
    proc = _python(code, PYTHONPATH=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "dvc.utils.serialize._common"]
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("classprune.dvc_atomic: not active: SyntaxError"), proc.stderr


# --- guard against a DVC upgrade ---------------------------------------------------------------------


def test_dvc_dump_data_is_the_function_the_patch_was_written_for():
    """Fails when a DVC upgrade changes ``_dump_data``: re-check the patch (where DVC now writes dvc.lock,
    which modules bind the function), run the kill test, then update DUMP_DATA_SHA256 / WRITTEN_FOR_DVC."""
    code = ("import hashlib, inspect, dvc, dvc.utils.serialize._common as c;"
            "print(dvc.__version__, hashlib.sha256(inspect.getsource(c._dump_data).encode()).hexdigest())")
    proc = _python(code, CLASSPRUNE_DVC_ATOMIC="0")     # stock DVC, hashed here, not by the patch
    assert proc.returncode == 0, proc.stderr
    version, digest = proc.stdout.split()
    assert digest == atomic.DUMP_DATA_SHA256, (
        f"DVC {version}'s _dump_data changed (the patch was written for DVC {atomic.WRITTEN_FOR_DVC})")


def test_an_unknown_dump_data_is_left_alone_with_one_warning_line():
    code = ("import classprune.dvc_atomic as a\n"
            "a.DUMP_DATA_SHA256 = '0' * 64   # as if DVC had changed the function\n"
            "import dvc.utils.serialize._yaml as y, dvc.utils.serialize._common as c\n"
            "assert a.patch() is False and a.patch() is False\n"
            "print(y._dump_data is c._dump_data is a.original_dump_data())\n")
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True", "DVC must stay unpatched"
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("classprune.dvc_atomic: DVC ") and "left unpatched" in lines[0]


# --- the atomic write -------------------------------------------------------------------------------


def _stock_dump_yaml(path: Path, data) -> None:
    from dvc.utils.serialize._yaml import _dump

    atomic.original_dump_data()(path, data, dumper=_dump)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_the_atomic_write_gives_the_bytes_of_dvcs_write_and_keeps_the_permissions(tmp_path):
    from dvc.utils.serialize import dump_yaml, modify_yaml

    data = {"schema": "2.0", "stages": {f"s{i}": {"cmd": f"echo {i}", "deps": [{"path": "a", "md5": "0" * 32}]}
                                        for i in range(50)}}
    _stock_dump_yaml(tmp_path / "stock.lock", data)
    lock = tmp_path / "dvc.lock"
    dump_yaml(lock, data)                                   # the patched DVC (this interpreter has the .pth)
    assert lock.read_bytes() == (tmp_path / "stock.lock").read_bytes()
    assert lock.stat().st_mode & 0o777 == (tmp_path / "stock.lock").stat().st_mode & 0o777   # umask, like open()
    lock.chmod(0o640)
    inode = lock.stat().st_ino
    with modify_yaml(lock) as d:
        d["stages"]["s0"]["cmd"] = "echo changed"
    assert lock.stat().st_ino != inode, "modify_yaml (how DVC writes dvc.lock) goes through os.replace"
    assert lock.stat().st_mode & 0o777 == 0o640
    assert yaml.safe_load(lock.read_text())["stages"]["s0"]["cmd"] == "echo changed"
    assert _leftovers(tmp_path) == []


def test_a_symlinked_lock_is_written_through(tmp_path):
    real = tmp_path / "real" / "dvc.lock"
    real.parent.mkdir()
    real.write_text("old: 1\n")
    (tmp_path / "dvc.lock").symlink_to(real)
    atomic.atomic_dump_data(tmp_path / "dvc.lock", {"new": 2}, dumper=lambda d, s: s.write(yaml.safe_dump(d)))
    assert (tmp_path / "dvc.lock").is_symlink() and yaml.safe_load(real.read_text()) == {"new": 2}


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_a_failing_dump_leaves_the_old_file_and_no_temporary(tmp_path, error):
    lock = tmp_path / "dvc.lock"
    lock.write_text("stages: {a: 1}\n")

    def dumper(data, stream):
        stream.write("stages:\n  half")
        stream.flush()
        raise error

    with pytest.raises(error):
        atomic.atomic_dump_data(lock, {}, dumper)
    assert lock.read_text() == "stages: {a: 1}\n"
    assert _leftovers(tmp_path) == []


def test_a_non_local_filesystem_gets_dvcs_own_write():
    from dvc.fs import MemoryFileSystem

    fs = MemoryFileSystem()
    assert not atomic._is_local(fs)
    atomic.atomic_dump_data("/x/dvc.lock", {"a": 1}, dumper=lambda d, s: s.write(yaml.safe_dump(d)), fs=fs)
    assert yaml.safe_load(fs.cat_file("/x/dvc.lock")) == {"a": 1}


# --- kill -9 inside the lock dump ----------------------------------------------------------------------

STAGES = 300
# Test-only slow-down of DVC's YAML dump, in the killed `dvc` process only (its PYTHONPATH): the dump text
# is written in small flushed chunks with short sleeps, so that the test can see the dump under way on the
# file system and kill the process at a chosen offset. It wraps the dumper, not the write: the same with
# and without the patch.
SLOW_DUMP_SITECUSTOMIZE = textwrap.dedent('''\
    import os
    _spec = os.environ.get("CLASSPRUNE_TEST_SLOW_DUMP")
    if _spec:
        import io
        import time
        import dvc.utils.serialize._yaml as _yaml

        _chunk, _delay = int(_spec.split(",")[0]), float(_spec.split(",")[1])
        _fast = _yaml._dump

        def _slow_dump(data, stream):
            buf = io.StringIO()
            _fast(data, buf)
            text = buf.getvalue()
            for i in range(0, len(text), _chunk):
                stream.write(text[i:i + _chunk])
                stream.flush()
                time.sleep(_delay)

        _yaml._dump = _slow_dump
''')
OFFSETS = (0.0, 0.02, 0.15, 0.35, 0.5, 0.65, 0.8, 0.92)   # of the bytes written when killed (the last
# stays a few chunks from the end, so that a loaded machine still catches the dump under way)


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **GIT_ENV, "DVC_NO_ANALYTICS": "1", **extra}
    env["PATH"] = str(BIN) + os.pathsep + env.get("PATH", "")
    return env


def _lock_project(root: Path) -> Path:
    """git + DVC repo, one dvc.yaml of STAGES cheap stages and a complete dvc.lock in DVC's own format."""
    proj = root / "proj"
    proj.mkdir()
    git(proj, "init", "-q")
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=proj, check=True, env=_env())
    (proj / "dep.txt").write_text("input\n")
    md5 = hashlib.md5(b"input\n").hexdigest()
    names = [f"s{i:03d}" for i in range(STAGES)]
    (proj / "dvc.yaml").write_text(yaml.safe_dump(
        {"stages": {n: {"cmd": f"echo {n}", "deps": ["dep.txt"]} for n in names}}, sort_keys=False))
    (proj / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {
        n: {"cmd": f"echo {n}", "deps": [{"path": "dep.txt", "hash": "md5", "md5": md5, "size": 6}]}
        for n in names}}, sort_keys=False))
    # one unslowed run: DVC rewrites the whole lock as it writes it (same entries, DVC's formatting)
    subprocess.run([str(BIN / "dvc"), "repro", "--single-item", "--force", names[0]], cwd=proj, check=True,
                   capture_output=True, env=_env())
    git(proj, "add", "-A")
    git(proj, "commit", "-qm", "lock project")
    return proj


def _dump_progress(proj: Path, before: os.stat_result) -> tuple[str, int] | None:
    """Where DVC's lock dump stands, from the file system: ('temp', bytes) while the patched dump fills its
    temporary file, ('in place', bytes) while stock DVC rewrites dvc.lock itself; None before or after."""
    for tmp in proj.glob(".dvc.lock.*.tmp"):
        try:
            return "temp", tmp.stat().st_size
        except FileNotFoundError:      # renamed onto dvc.lock just now
            pass
    st = (proj / "dvc.lock").stat()
    if st.st_ino == before.st_ino and (st.st_size, st.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        if st.st_size < before.st_size:
            return "in place", st.st_size
    return None


def _kill_inside_the_dump(proj: Path, stage: str, fraction: float, env: dict, log: Path) -> tuple[str, int]:
    lock = proj / "dvc.lock"
    before = lock.stat()
    with open(log, "w") as out:
        proc = subprocess.Popen([str(BIN / "dvc"), "repro", "--single-item", "--force", stage], cwd=proj,
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            progress = _dump_progress(proj, before)
            if progress is not None and progress[1] >= fraction * before.st_size:
                os.killpg(proc.pid, signal.SIGKILL)
                break
            assert proc.poll() is None, f"dvc repro ended before the kill inside its dump: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "no lock dump seen in time"
            time.sleep(0.0005)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return progress


def _damage(text: str, entries: dict, stage: str) -> str | None:
    """What a kill did to dvc.lock, or None: it parses and holds every entry it held (bar ``stage``'s)."""
    if not text:
        return "dvc.lock is empty"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        return f"dvc.lock does not parse ({str(e).splitlines()[0]})"
    stages = (data or {}).get("stages") or {}
    lost = [n for n in entries if n != stage and stages.get(n) != entries[n]]
    return f"{len(lost)} of {len(entries)} stage entries lost or changed (first: {lost[0]})" if lost else None


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_kill_9_inside_the_lock_dump_leaves_a_complete_dvc_lock(tmp_path):
    proj = _lock_project(tmp_path)
    lock = proj / "dvc.lock"
    pristine = lock.read_bytes()
    entries = yaml.safe_load(pristine)["stages"]
    assert len(entries) == STAGES
    site = tmp_path / "slow_dump"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOW_DUMP_SITECUSTOMIZE)
    # ~40 KB in 256-byte chunks, 2 ms apart: the dump lasts about 0.3 s instead of milliseconds; 10 ms apart
    # (1.5 s) when another test file runs beside this one (pytest-xdist), so that a busy CPU cannot make the
    # poll below miss the window
    gap = "0.01" if os.environ.get("PYTEST_XDIST_WORKER") else "0.002"
    env = _env(PYTHONPATH=str(site), CLASSPRUNE_TEST_SLOW_DUMP=f"256,{gap}")
    results, failures = [], []
    for k, fraction in enumerate(OFFSETS):
        stage = f"s{(37 * k + 11) % STAGES:03d}"
        where, written = _kill_inside_the_dump(proj, stage, fraction, env, tmp_path / f"kill_{k}.log")
        assert written < len(pristine), "killed after the dump, not inside it"
        damage = _damage(lock.read_text(), entries, stage)
        results.append(f"offset {fraction:4.0%} ({where}, {written}/{len(pristine)} bytes written, {stage}): "
                       f"{damage or 'dvc.lock complete'}")
        if damage:
            failures.append(results[-1])
        leftovers = _leftovers(proj)
        assert all(n.startswith(".dvc.lock.") for n in leftovers), leftovers   # only a hidden temporary
        for name in leftovers:
            (proj / name).unlink()
        lock.write_bytes(pristine)            # the next offset starts from the complete lock again
    print("\n".join(results))
    assert not failures, "kill -9 inside DVC's lock dump damaged dvc.lock:\n" + "\n".join(results)
    # and DVC carries on from the surviving lock
    status = subprocess.run([str(BIN / "dvc"), "status"], cwd=proj, capture_output=True, text=True, env=_env())
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout + status.stderr
