"""Paper-scale data path: generation and decoding in worker processes give the same bytes as one
process, and the cache's memory stays bounded by a few chunks, not by the data set."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from classprune.data import cache, sources, split, synthetic
from classprune.data.parallel import resolve_workers
from classprune.errors import DataError


def _tree_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generate_and_cache_are_byte_identical_whatever_the_workers(tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic, "CHUNK", 5)  # several chunks per class, so workers interleave
    monkeypatch.setattr(cache, "CHUNK", 7)
    indexes = {w: synthetic.generate(tmp_path / f"raw{w}", 9, 23, image_size=64, seed=3, workers=w) for w in (1, 3)}
    assert indexes[1]["label"].tolist() == indexes[3]["label"].tolist()
    assert _tree_bytes(tmp_path / "raw1") == _tree_bytes(tmp_path / "raw3")
    manifest = split.imbalanced_split(sources.index_crack(tmp_path / "raw1"), n_negative=23, n_positive=9, seed=0)
    metas = {w: cache.build_cache(manifest, tmp_path / f"cache{w}", 64, workers=w) for w in (1, 2, 3)}
    assert metas[1] == metas[2] == metas[3]
    assert _tree_bytes(tmp_path / "cache1") == _tree_bytes(tmp_path / "cache2") == _tree_bytes(tmp_path / "cache3")


def test_worker_error_is_one_line_and_leaves_nothing(tmp_path):
    synthetic.generate(tmp_path / "raw", 8, 24, image_size=64, seed=0)
    manifest = split.imbalanced_split(sources.index_crack(tmp_path / "raw"), n_negative=24, n_positive=8, seed=0)
    manifest.loc[3, "path"] = str(tmp_path / "raw" / "missing.png")
    with pytest.raises(DataError, match=r"cannot decode image .*missing\.png") as exc:
        cache.build_cache(manifest, tmp_path / "cache", 64, workers=2)
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "cache").exists() and not list(tmp_path.glob(".cache*"))


def test_resolve_workers():
    assert resolve_workers(0) == resolve_workers(None) == (os.cpu_count() or 1)
    assert resolve_workers(3) == 3


# Peak RSS bound of the cache. 4000 images of 224 px are 602 MB of uint8; building their cache may grow the
# process by at most 150 MB (measured: 40 MiB: one chunk of 256 decoded images mapped, 38 MB, plus the
# decoder). It runs in one process (workers=1) so that ru_maxrss sees all of it: decoding workers run the same
# chunk function, so each of them is bounded the same way (measured at paper scale: benchmarks/bench_paper_data.py).
N_IMAGES, GROWTH_MB = 4000, 150


@pytest.mark.slow
def test_cache_of_4000_images_at_224px_stays_under_the_rss_bound(tmp_path):
    synthetic.generate(tmp_path / "src", 8, 8, image_size=224, seed=0)
    files = sorted((tmp_path / "src").rglob("*.png"))
    for label in ("Negative", "Positive"):
        (tmp_path / "raw" / label).mkdir(parents=True)
    n_pos = N_IMAGES // 6
    for i in range(N_IMAGES):  # hard links: thousands of distinct paths without generating thousands of images
        label = "Positive" if i < n_pos else "Negative"
        os.link(files[i % len(files)], tmp_path / "raw" / label / f"{i:05d}.png")
    code = textwrap.dedent(f"""
        import json, resource
        from classprune.data import cache, sources, split
        manifest = split.imbalanced_split(sources.index_crack({str(tmp_path / 'raw')!r}),
                                          n_negative={N_IMAGES - n_pos}, n_positive={n_pos}, seed=0)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        cache.build_cache(manifest, {str(tmp_path / 'cache')!r}, 224, workers=1)
        print(json.dumps({{"growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    growth = json.loads(out.strip().splitlines()[-1])["growth_mb"]
    data_mb = sum(p.stat().st_size for p in (tmp_path / "cache").glob("*_images.npy")) / 2**20
    assert data_mb > 3 * GROWTH_MB  # the bound is far below what holding the array would take
    print(f"cache of {data_mb:.0f} MiB grew the process by {growth:.0f} MiB")
    assert growth < GROWTH_MB, f"cache build grew the process by {growth:.0f} MB for {data_mb:.0f} MB of images"
