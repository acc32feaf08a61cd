"""GPU stages hold a slot of their device while they run, so they never oversubscribe it (see flows.pipeline)."""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

# stage kinds that compute on train.device (the channel tickets' too)
GPU_STAGES = ("lt", "evaluate", "baseline", "pretrain", "lt_ch", "eval_ch", "reinit")


def stage_gpu(repo_dir: str) -> str | None:
    """The CUDA device GPU stages will use (``cuda:N``), or None when they run on the CPU: params.yaml's
    train.device resolved as the stages resolve it (auto: a GPU when torch sees one)."""
    from classprune.config import load_train

    name = load_train(Path(repo_dir) / "params.yaml").device.lower()
    if name == "cpu":
        return None
    import torch

    if not torch.cuda.is_available():
        return None  # auto means cpu; an explicit cuda fails in the stage with its own one-line error
    return name if ":" in name else "cuda:0"


@contextlib.contextmanager
def device_slot(gpu: str | None, lock_dir: Path, slots: int = 1, poll_s: float = 0.5) -> Iterator[None]:
    """Hold one of ``slots`` exclusive slots of ``gpu`` (flock'ed files, released if the process dies), so
    GPU stages do not oversubscribe the device; no-op for CPU stages (``gpu`` None)."""
    if gpu is None:
        yield
        return
    import fcntl

    lock_dir.mkdir(parents=True, exist_ok=True)
    while True:
        for j in range(max(1, slots)):
            fd = os.open(lock_dir / f"{gpu.replace(':', '')}-slot{j}.lock", os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
            return
        time.sleep(poll_s)
