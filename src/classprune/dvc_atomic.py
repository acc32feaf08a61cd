"""Atomic writes of dvc.lock (and of every file DVC writes through ``dvc.utils.serialize``): issue 28.

DVC 3.67 writes dvc.lock in place: ``dvc.utils.serialize._common._dump_data`` opens the file with
``"w+"`` (truncating it) and then runs the ruamel dump, which takes seconds for a 32k-line lock. A kill -9
in that window (Ctrl-C escalated, OOM killer, CI time-out, preempted node) leaves dvc.lock empty or cut
short, and the stages it no longer lists silently rerun or, worse, look never run.

This module replaces ``_dump_data`` with :func:`atomic_dump_data`: the dump goes to a hidden temporary
file in the same directory (``.dvc.lock.<pid>.<random>.tmp``), which is flushed, fsynced, given the
target's permission bits and then ``os.replace``-d onto the target, so the target is always either the
old complete file or the new complete file. A non-local filesystem gets DVC's own function.

Activation (``make install``, i.e. :func:`install_pth`, writes two files into the venv's site-packages):
``classprune_dvc_atomic.pth`` imports ``_classprune_dvc_atomic_trigger`` (a few lines, no other import) at
start-up of every interpreter of the venv, which puts a trigger finder at the front of ``sys.meta_path``.
The first time anything imports ``dvc.utils.serialize`` (the ``dvc`` console script, ``python -m dvc``,
the flows' ``dvc --wait-for-lock repro --single-item`` subprocesses, DVC's API in-process) the trigger
imports this module, lets the normal import run and then rebinds ``_dump_data`` in every
``dvc.utils.serialize`` module that holds it: ``_common`` (for ``_modify_data``, i.e. ``modify_yaml``) and
``_yaml``/``_json``/``_toml``/``_py``, which import it by name. Interpreters that never import DVC (every
pipeline stage) import nothing more. :func:`install` does the same in a process started without the .pth.

Guard against DVC upgrades: the patch is applied only when the source of DVC's ``_dump_data`` hashes to
:data:`DUMP_DATA_SHA256` (the function it was written against, in DVC :data:`WRITTEN_FOR_DVC`); otherwise
DVC is left as it is and one line on stderr says so (once per process). tests/test_lock_atomic.py fails on
such an upgrade. ``CLASSPRUNE_DVC_ATOMIC=0`` in the environment disables the patch (stock DVC behaviour).

Plumbing only: standard library, no torch, nothing but ``os``/``sys`` at import time.
"""
from __future__ import annotations

import os
import sys

ENV = "CLASSPRUNE_DVC_ATOMIC"
TARGET = "dvc.utils.serialize"
WRITTEN_FOR_DVC = "3.67.1"
# sha256 of inspect.getsource(dvc.utils.serialize._common._dump_data) in DVC 3.67.1
DUMP_DATA_SHA256 = "e5c82405acfc8ccb4da5165bf45601477d357fcf3dff91b9627350f584c84c94"

PTH_NAME = "classprune_dvc_atomic.pth"
TRIGGER_MODULE = "_classprune_dvc_atomic_trigger"
# site.py runs the .pth's import line at every start-up; in a venv CPython 3.11 processes site-packages
# twice (venv() and main() both call addsitepackages), the second import is a sys.modules hit
PTH_LINE = f"import {TRIGGER_MODULE}\n"
# The trigger, a module of its own in site-packages so that start-up loads its cached .pyc (no compile,
# no classprune import). Silent when classprune is not importable (uninstalled); one line on stderr, never
# a failed DVC import, if this module is broken.
TRIGGER_SOURCE = '''\
"""classprune (src/classprune/dvc_atomic.py, issue 28): DVC writes dvc.lock atomically.

Written by classprune.dvc_atomic.install_pth (make install); imported at start-up by classprune_dvc_atomic.pth.
CLASSPRUNE_DVC_ATOMIC=0 turns it off.
"""
import os
import sys


class ClassPruneDvcAtomicTrigger:
    off = False

    def find_spec(self, name, path=None, target=None):
        if name != "dvc.utils.serialize" or self.off:
            return None
        try:
            from classprune.dvc_atomic import find_spec_and_patch

            return find_spec_and_patch(self, name, path, target)
        except Exception as e:   # never fail DVC's import
            self.off = True      # (not sys.meta_path.remove: the import system is iterating that list)
            if not isinstance(e, ImportError):
                sys.stderr.write("classprune.dvc_atomic: not active: %r\\n" % (e,))
            return None


if (os.environ.get("CLASSPRUNE_DVC_ATOMIC", "1").strip().lower() not in ("0", "false", "no", "off")
        and not any(type(f).__name__ == "ClassPruneDvcAtomicTrigger" for f in sys.meta_path)):
    sys.meta_path.insert(0, ClassPruneDvcAtomicTrigger())
'''

_original = None     # DVC's _dump_data, once patched
_warned = False


def enabled() -> bool:
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def find_spec_and_patch(finder, fullname, path=None, target=None):
    """``finder.find_spec`` for ``dvc.utils.serialize``: the spec the other finders give, with its loader
    patching DVC right after the package has executed (and then taking the triggers off ``sys.meta_path``).

    A find_spec without an import (``importlib.util.find_spec``) changes nothing: the trigger stays until
    a real import has run.
    """
    for other in sys.meta_path:
        if other is finder or type(other).__name__ == "ClassPruneDvcAtomicTrigger":
            continue
        find = getattr(other, "find_spec", None)
        spec = find(fullname, path, target) if find is not None else None
        if spec is not None:
            break
    else:
        return None
    exec_module = getattr(spec.loader, "exec_module", None)
    if exec_module is None:
        return spec

    def exec_and_patch(module):
        exec_module(module)
        for f in [f for f in sys.meta_path if type(f).__name__ == "ClassPruneDvcAtomicTrigger"]:
            try:   # done: later imports pass by no trigger
                sys.meta_path.remove(f)
            except ValueError:
                pass
        patch()

    # the loader instance is this spec's own (FileFinder makes one per spec); module.__loader__ stays
    # DVC's SourceFileLoader, so inspect, importlib.resources and reload behave as before
    spec.loader.exec_module = exec_and_patch
    return spec


def install() -> None:
    """Patch DVC as soon as it is imported (now, if it already is), in a process started without the .pth:
    the same trigger. Cheap: no DVC import."""
    if TARGET not in sys.modules:
        exec(TRIGGER_SOURCE, {"__name__": TRIGGER_MODULE})
    elif enabled():
        patch()


def source_digest(func) -> str | None:
    import hashlib
    import inspect

    try:
        return hashlib.sha256(inspect.getsource(func).encode()).hexdigest()
    except (OSError, TypeError):
        return None


def _warn(message: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        sys.stderr.write(f"classprune.dvc_atomic: {message}\n")


def patch() -> bool:
    """Rebind ``_dump_data`` in the ``dvc.utils.serialize`` modules; True when the atomic one is in place.

    Never raises: a failure leaves DVC as it is and warns once.
    """
    global _original
    try:
        common = sys.modules.get(TARGET + "._common")
        current = getattr(common, "_dump_data", None)
        if current is atomic_dump_data:
            return True
        digest = source_digest(current) if current is not None else None
        if digest != DUMP_DATA_SHA256:
            version = getattr(sys.modules.get("dvc"), "__version__", "?")
            _warn(f"DVC {version}'s {TARGET}._common._dump_data is not the one this patch was written for "
                  f"(DVC {WRITTEN_FOR_DVC}, sha256 {DUMP_DATA_SHA256[:12]}, found {str(digest)[:12]}): left "
                  f"unpatched, dvc.lock is written in place; review src/classprune/dvc_atomic.py")
            return False
        _original = current
        for name, module in list(sys.modules.items()):
            if (name == TARGET or name.startswith(TARGET + ".")) and getattr(module, "_dump_data", None) is current:
                module._dump_data = atomic_dump_data
        return True
    except Exception as e:  # never break DVC's import
        _warn(f"patch failed, dvc.lock is written in place: {e!r}")
        return False


def original_dump_data():
    """DVC's own ``_dump_data`` (whether or not it is patched)."""
    if _original is not None:
        return _original
    import dvc.utils.serialize._common as common

    return common._dump_data


def _is_local(fs) -> bool:
    if fs is None:
        return True
    try:
        from dvc_objects.fs.local import FsspecLocalFileSystem, LocalFileSystem
    except ImportError:
        return False
    return isinstance(fs, LocalFileSystem) and isinstance(getattr(fs, "fs", None), FsspecLocalFileSystem)


def atomic_dump_data(path, data, dumper, fs=None, **dumper_args):
    """DVC's ``_dump_data`` (same signature), writing through a temporary file and ``os.replace``."""
    if not _is_local(fs):
        return (_original or original_dump_data())(path, data, dumper, fs=fs, **dumper_args)
    write_atomically(path, lambda stream: dumper(data, stream, **dumper_args))


def write_atomically(path, write) -> None:
    """Call ``write(stream)`` on a UTF-8 text stream that becomes ``path`` only once complete.

    The temporary file is a hidden sibling (same directory, so ``os.replace`` is an atomic rename on the
    same filesystem), created with mode 0o666 minus the umask like ``open()``, then given the existing
    file's permission bits. A symlink at ``path`` is followed (its target is replaced, as ``open("w")``
    would write through it). On any error, KeyboardInterrupt included, the temporary file is removed and
    ``path`` is untouched; only a SIGKILL can leave the temporary behind (never ``path`` half written).
    """
    target = os.path.realpath(os.fspath(path))
    directory, name = os.path.split(target)
    try:
        mode = os.stat(target).st_mode & 0o7777
    except FileNotFoundError:
        mode = None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = os.path.join(directory, f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"no free temporary name next to {target}")
    try:
        with open(fd, "w", encoding="utf-8") as stream:
            if mode is not None:
                os.fchmod(fd, mode)
            write(stream)
            stream.flush()
            os.fsync(fd)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)


def _fsync_dir(directory: str) -> None:
    """Make the rename itself durable (best effort: not every filesystem lets a directory be fsynced)."""
    try:
        fd = os.open(directory or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def site_packages() -> str:
    import sysconfig

    return sysconfig.get_paths()["purelib"]


def install_pth(directory: str | None = None) -> str:
    """Write (or refresh) the .pth and its trigger module that activate the patch in every interpreter of
    the environment whose site-packages is ``directory`` (default: this one's), and byte-compile the
    trigger. Idempotent: rewrites a file only when its content differs. Returns the .pth's path.
    """
    import py_compile

    directory = directory or site_packages()
    trigger = os.path.join(directory, TRIGGER_MODULE + ".py")
    for path, text in ((trigger, TRIGGER_SOURCE), (os.path.join(directory, PTH_NAME), PTH_LINE)):
        try:
            with open(path, encoding="utf-8") as f:
                if f.read() == text:
                    continue
        except FileNotFoundError:
            pass
        write_atomically(path, lambda stream: stream.write(text))
    py_compile.compile(trigger, doraise=True)
    return os.path.join(directory, PTH_NAME)


def uninstall_pth(directory: str | None = None) -> None:
    """Remove what :func:`install_pth` wrote."""
    import importlib.util

    directory = directory or site_packages()
    trigger = os.path.join(directory, TRIGGER_MODULE + ".py")
    for path in (os.path.join(directory, PTH_NAME), trigger, importlib.util.cache_from_source(trigger)):
        if os.path.exists(path):
            os.unlink(path)
