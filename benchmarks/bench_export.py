"""The deployable model: bytes on disk of the sparse exports, and latency of the dense torch model vs ONNX.

Sizes: AlexNet-256-8-8-2 pruned (layerwise top magnitude, as a round's mask) to 100 / 12.5 / 1.5625 %
remaining, saved as a dense ``weights.pt`` like a train stage does, then exported by
``classprune.edge.export.export_model``; the target is sparse fp16 <= 3 % of the dense checkpoint at 1.56 %.

Latency: one image (batch 1) at 64 and 224 px, the torch model (eval, no_grad, dense tensors as in
weights.pt) against the exported ONNX model in onnxruntime with the same number of threads, each for the
dense (100 %) and the 1.56 % model, interleaved repetitions, medians. Both runtimes use dense kernels: the
zeros of unstructured pruning cost the same time as any other weight.

    python benchmarks/bench_export.py [--reps 50] [--threads N]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from _common import interleaved, median, print_result, row, set_threads  # noqa: E402

LEVELS = (1.0, 0.125, 0.015625)
TARGET = 0.03


def _round(tmp: Path, keep: float) -> tuple[Path, Path]:
    from classprune.lottery.masks import full_mask, save_mask
    from classprune.models.network import build_model
    from classprune.lottery.pruning import keep_top

    model = build_model(seed=0)
    state = model.state_dict()
    mask = full_mask(model)
    if keep < 1.0:
        mask = keep_top({n: state[n].abs() for n in mask}, mask, keep)
    d = tmp / f"keep_{keep}"
    d.mkdir()
    torch.save({n: t * mask[n] if n in mask else t for n, t in state.items()}, d / "weights.pt")
    save_mask(mask, d / "mask.pt")
    return d / "weights.pt", d / "mask.pt"


def sizes(tmp: Path) -> list[dict]:
    from classprune.edge.export import export_model, measure_sizes

    out = []
    meta = {"image_size": 64, "mean": [0.5] * 3, "std": [0.25] * 3}
    for keep in LEVELS:
        weights, mask = _round(tmp, keep)
        info = export_model(tmp / f"export_{keep}", weights, mask, meta, 0.5, k=0)
        out.append({"keep": keep, "remaining": info["remaining"], "nonzero": info["nonzero"],
                    **measure_sizes(weights, tmp / f"export_{keep}")})
    return out


def latency(tmp: Path, reps: int, threads: int) -> dict[int, dict[str, float]]:
    """Median seconds per image (batch 1): torch and onnxruntime, each on the dense (100 %) and the 1.56 % model."""
    import onnxruntime as ort

    from classprune.edge.onnx_files import export_onnx
    from classprune.edge.sparse import load_sparse

    result = {}
    for size in (64, 224):
        x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
        xn = x.numpy()
        cases = {}
        for keep, tag in ((1.0, "100%"), (0.015625, "1.56%")):
            model = load_sparse(tmp / f"export_{keep}" / "sparse_fp32.pt")  # = the weights.pt, checked in tests
            path = tmp / f"lat_{size}_{keep}.onnx"
            export_onnx(model, size, path, {})
            opts = ort.SessionOptions()
            opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

            def run_torch(model=model):
                with torch.no_grad():
                    model(x)

            def run_onnx(sess=sess):
                sess.run(["score"], {"image": xn})

            cases[f"torch {tag}"], cases[f"onnx {tag}"] = run_torch, run_onnx
        n = reps if size == 64 else max(6, reps // 2)
        times = interleaved(cases, n, warmup=3)
        result[size] = {k: median(v) for k, v in times.items()} | {"reps": n}
    return result


def run(reps: int = 50, threads: int | None = None) -> dict:
    threads = set_threads(threads)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        sz = sizes(tmp)
        lat = latency(tmp, reps, threads)
    at = {s["keep"]: s for s in sz}
    low = at[0.015625]
    frac = low["sparse_fp16_bytes"] / low["dense_bytes"]
    notes = ["export sizes (bytes on disk, raw / gzip), AlexNet-256-8-8-2:"]
    for s in sz:
        notes.append(f"  {100 * s['remaining']:.3g} % remaining ({s['nonzero']:,} nonzero): dense {s['dense_bytes']:,} / "
                     f"{s['dense_gz_bytes']:,}; sparse fp32 {s['sparse_fp32_bytes']:,} / {s['sparse_fp32_gz_bytes']:,}; "
                     f"sparse fp16 {s['sparse_fp16_bytes']:,} / {s['sparse_fp16_gz_bytes']:,}; "
                     f"ONNX {s['onnx_bytes']:,} / {s['onnx_gz_bytes']:,}")
    notes.append(f"  sparse fp16 / dense at 1.56 %: {100 * frac:.2f} % (target <= {100 * TARGET:.0f} %)")
    notes.append(f"latency per image, batch 1, {threads} threads (torch and onnxruntime), medians:")
    for size, t in lat.items():
        notes.append(f"  {size} px ({t['reps']} interleaved repetitions): torch eager 100 % {t['torch 100%'] * 1e3:.2f} ms, "
                     f"1.56 % {t['torch 1.56%'] * 1e3:.2f} ms; onnxruntime 100 % {t['onnx 100%'] * 1e3:.2f} ms, "
                     f"1.56 % {t['onnx 1.56%'] * 1e3:.2f} ms")
    rows = [row("sparse fp16 export vs dense weights.pt at 1.56 % remaining", ours=low["sparse_fp16_bytes"] / 1024,
                reference=low["dense_bytes"] / 1024, unit="KiB", ratio=1 / frac, ratio_name="smaller",
                target=f"<= {100 * TARGET:.0f} % ({1 / TARGET:.1f}x)", met=frac <= TARGET,
                note=f"{100 * frac:.2f} % of dense")]
    for size, t in lat.items():
        rows.append(row(f"latency per image, batch 1, {size} px, 1.56 % model: ONNX (onnxruntime) vs torch",
                        ours=t["onnx 1.56%"] * 1e3, reference=t["torch 1.56%"] * 1e3, unit="ms",
                        ratio=t["torch 1.56%"] / t["onnx 1.56%"], ratio_name="faster", target="measured", met=True))
        rows.append(row(f"latency per image, batch 1, {size} px, onnxruntime: 1.56 % vs dense 100 % model",
                        ours=t["onnx 1.56%"] * 1e3, reference=t["onnx 100%"] * 1e3, unit="ms",
                        ratio=t["onnx 100%"] / t["onnx 1.56%"], ratio_name="faster",
                        target="~1x: unstructured zeros cost what weights cost", met=True))
    return {"name": "export", "rows": rows, "notes": notes,
            "details": {"threads": threads, "sizes": sz, "latency_s": {str(k): v for k, v in lat.items()},
                        "fp16_over_dense": frac}}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=50)
    p.add_argument("--threads", type=int, help="torch and onnxruntime threads (default: torch's)")
    a = p.parse_args(argv)
    print_result(run(a.reps, a.threads))


if __name__ == "__main__":
    main()
