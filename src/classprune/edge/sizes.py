"""Bytes on disk of the exported files (reports/export_sizes.csv and its table), apart from the export
itself so that the table can be read without torch-side export code."""
from __future__ import annotations

import csv
import gzip
import io as _io
from pathlib import Path
from typing import Any

from .. import io

SIZES_CSV = Path("reports/export_sizes.csv")
SIZE_COLUMNS = ("scenario", "seed", "round", "remaining", "nonzero", "dense_bytes", "dense_gz_bytes",
                "sparse_fp32_bytes", "sparse_fp32_gz_bytes", "sparse_fp16_bytes", "sparse_fp16_gz_bytes",
                "onnx_bytes", "onnx_gz_bytes", "fp16_over_dense")


def gz_size(path: Path) -> int:
    return len(gzip.compress(path.read_bytes(), compresslevel=6, mtime=0))


def write_sizes_csv(rows: list[dict[str, Any]], path: str | Path = SIZES_CSV) -> None:
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SIZE_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in SIZE_COLUMNS})
    io.write_text(path, buf.getvalue())


def export_sizes_markdown(path: str | Path = SIZES_CSV) -> str:
    """The size table for reports/summary.md (KiB on disk, raw / gzip)."""
    path = Path(path)
    if not path.is_file():
        return "_No export size table: run the export stage._\n"
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    lines = ["## Exported models: bytes on disk", "",
             "KiB raw / gzip. Sparse files hold only the surviving weights (values + positions); ONNX is dense.", "",
             "| scenario | round | remaining | nonzero | dense weights.pt | sparse fp32 | sparse fp16 | ONNX "
             "| fp16 / dense |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def kib(r, key):
        if not r[key + "_bytes"]:
            return "not shipped"
        return f"{int(r[key + '_bytes']) / 1024:,.0f} / {int(r[key + '_gz_bytes']) / 1024:,.0f}"

    for r in rows:
        lines.append(f"| {r['scenario']} | {r['round']} | {100 * float(r['remaining']):.3g} % | {int(r['nonzero']):,} "
                     f"| {kib(r, 'dense')} | {kib(r, 'sparse_fp32')} | {kib(r, 'sparse_fp16')} | {kib(r, 'onnx')} "
                     f"| {100 * float(r['fp16_over_dense']):.2f} % |")
    if not rows:
        lines.append("| (no scenario met its FN budget) | | | | | | | | |")
    return "\n".join(lines) + "\n"


