"""Process pool for the data stages: generating and decoding tens of thousands of images is CPU-bound.

Work is cut into fixed chunks (independent of the worker count) and every image is seeded or decoded on
its own, so the output is byte-identical whatever ``workers`` is. Light on imports (no torch, no pandas):
worker processes start from a fork server and import only this and the worker function's module.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from tqdm import tqdm


def resolve_workers(workers: int | None) -> int:
    """0 or None: one process per core."""
    return max(1, int(workers or 0) or os.cpu_count() or 1)


def run_chunks(fn: Callable[..., Any], chunks: Sequence[tuple], workers: int | None, desc: str,
               sizes: Sequence[int] | None = None, unit: str = "img") -> Iterator[Any]:
    """Yield ``fn(*chunk)`` for every chunk, in chunk order, from ``workers`` processes (in this process for
    one worker); a tqdm bar counts ``sizes`` (items per chunk) on a terminal. At most 2 x workers chunks are
    in flight, so results waiting to be consumed stay bounded."""
    workers = min(resolve_workers(workers), max(1, len(chunks)))
    sizes = list(sizes) if sizes is not None else [1] * len(chunks)
    with tqdm(total=sum(sizes), desc=desc, unit=unit, disable=not sys.stderr.isatty()) as bar:
        if workers == 1:
            for chunk, size in zip(chunks, sizes):
                yield fn(*chunk)
                bar.update(size)
            return
        ctx = multiprocessing.get_context("forkserver" if sys.platform != "win32" else "spawn")
        pool = ProcessPoolExecutor(workers, mp_context=ctx)
        try:
            pending: list = []
            for chunk, size in zip(chunks, sizes):
                pending.append((pool.submit(fn, *chunk), size))
                if len(pending) >= 2 * workers:
                    future, done = pending.pop(0)
                    yield future.result()
                    bar.update(done)
            for future, done in pending:
                yield future.result()
                bar.update(done)
        finally:  # on an error (a corrupt image), drop the queued chunks instead of decoding them all
            pool.shutdown(wait=True, cancel_futures=True)
