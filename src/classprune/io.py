"""Atomic writes: a killed stage must never leave a file that DVC could take for a finished output."""
from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator



@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it over ``path`` only if the block succeeds."""
    path = Path(path)
    created = [d for d in path.parents if not d.exists()]  # removed again, if still empty, when the block fails
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):  # left by a killed writer
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it owner-only; outputs should get the usual permissions
    target = tmp if is_dir else tmp / path.name
    done = False
    try:
        yield target
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(target, path)
        done = True
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        for d in created if not done else ():  # deepest first
            with contextlib.suppress(OSError):
                d.rmdir()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n")


def write_npz(path: str | os.PathLike, arrays: dict[str, Any]) -> None:
    """``numpy.load``-able .npz with fixed zip timestamps: the same arrays give the same bytes (DVC hashes)."""
    import zipfile

    import numpy as np

    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w") as f:
                np.lib.format.write_array(f, np.asarray(arrays[name]), allow_pickle=False)


def copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """``src`` (a file or a directory) copied to ``dst`` atomically: the same bytes, so the same DVC hash."""
    src = Path(src)
    if not src.exists():
        from .errors import CheckpointError

        raise CheckpointError(f"not found: {src}; run the stage that writes it first")
    with atomic_path(dst, is_dir=src.is_dir()) as tmp:
        if src.is_dir():
            shutil.copytree(src, tmp, dirs_exist_ok=True)
        else:
            shutil.copyfile(src, tmp)


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_torch(path: str | os.PathLike) -> Any:
    """Load a checkpoint with weights_only=True only: a pickle carrying code is refused.

    torch.load does not verify the zip CRCs, so flipped tensor bytes would load silently; testzip does.
    """
    import pickle
    import zipfile

    import torch

    from .errors import CheckpointError, first_line

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
            if bad is not None:
                raise CheckpointError(f"checkpoint {path} is corrupt (bad CRC in {bad}); rerun the stage that wrote it")
        return torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except pickle.UnpicklingError as exc:
        # torch's first line advises weights_only=False; name what was blocked instead
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
        detail = next((ln for ln in lines if "GLOBAL" in ln or "Unpickler error" in ln), lines[0])
        raise CheckpointError(f"refusing to load {path}: not a weights-only checkpoint ({detail})") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged file
        raise CheckpointError(f"cannot read checkpoint {path}: {first_line(exc)}") from None
