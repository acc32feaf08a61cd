"""Paper-scale data path: synthetic generation and the decoded cache at 20,000 + 4,000 images of 224 px.

Usage: python benchmarks/bench_paper_data.py OUT_DIR [--workers 2] [--phase generate|cache|both]
Prints one JSON line per phase: wall seconds, peak RSS of this process and of its largest worker (MB), and
bytes on disk. Run the phases as separate invocations to get each phase's own peak RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path


class TreeRss(threading.Thread):
    """Samples the RSS of this process's descendants (the pool's workers sit under a fork server, so
    RUSAGE_CHILDREN does not see them before it exits): the largest worker and the largest total."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.worker_mb = self.total_mb = 0.0

    def run(self) -> None:
        me = os.getpid()
        while True:
            parents, rss = {}, {}
            for status in Path("/proc").glob("[0-9]*/status"):
                try:
                    fields = dict(ln.split(":\t", 1) for ln in status.read_text().splitlines() if ":\t" in ln)
                    parents[int(status.parent.name)] = int(fields["PPid"])
                    rss[int(status.parent.name)] = int(fields.get("VmRSS", "0 kB").split()[0]) / 1024
                except (OSError, KeyError, ValueError):
                    continue
            tree = [p for p in parents if self._descends(p, me, parents)]
            if tree:
                self.worker_mb = max(self.worker_mb, max(rss[p] for p in tree))
            self.total_mb = max(self.total_mb, rss.get(me, 0) + sum(rss[p] for p in tree))
            time.sleep(0.2)

    @staticmethod
    def _descends(pid: int, ancestor: int, parents: dict[int, int]) -> bool:
        while pid in parents and pid != ancestor:
            pid = parents[pid]
            if pid == ancestor:
                return True
        return False


def _peak_mb(tree: TreeRss) -> dict[str, float]:
    # ru_maxrss is in KiB on Linux
    return {"peak_rss_main_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_rss_worker_mb": round(tree.worker_mb, 1), "peak_rss_total_mb": round(tree.total_mb, 1)}


def _du(path: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout.split()[0])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--phase", choices=["generate", "cache", "both"], default="both")
    p.add_argument("--negatives", type=int, default=20000)
    p.add_argument("--positives", type=int, default=4000)
    p.add_argument("--size", type=int, default=224)
    a = p.parse_args(argv)
    raw, cache_dir = a.out / "raw", a.out / "cache"
    tree = TreeRss()
    tree.start()
    if a.phase in ("generate", "both"):
        from classprune.data import synthetic

        t = time.perf_counter()
        synthetic.generate(raw, a.positives, a.negatives, a.size, seed=0, workers=a.workers)
        print(json.dumps({"phase": "generate", "images": a.positives + a.negatives, "workers": a.workers,
                          "seconds": round(time.perf_counter() - t, 1), **_peak_mb(tree), "disk_bytes": _du(raw)}))
    if a.phase in ("cache", "both"):
        from classprune.data import cache, sources, split

        manifest = split.imbalanced_split(sources.index_crack(raw), a.negatives, a.positives, seed=0)
        t = time.perf_counter()
        cache.build_cache(manifest, cache_dir, a.size, workers=a.workers)
        print(json.dumps({"phase": "cache", "images": len(manifest), "workers": a.workers,
                          "seconds": round(time.perf_counter() - t, 1), **_peak_mb(tree),
                          "disk_bytes": _du(cache_dir)}))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
