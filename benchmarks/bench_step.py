"""One masked training step vs the same dense step: AlexNet-256-8-8-2, 64 px, batch 32.

Masked: forward, loss, backward, ``classprune.lottery.train.masked_step`` (mask the gradients, clip, SGD step,
re-mask the weights) with a 50 % bool mask, as ``train_masked`` passes it; dense: the same without the two
masking passes. A third, informational case runs masked_step with float32 masks. Both use the
pipeline's loss (ClassDependentLoss, gamma 1/5, lambda 5), SGD with momentum 0.9 and gradient clipping 1.0,
on two copies of the same model, stepping alternately.

    python benchmarks/bench_step.py [--reps 30] [--size 64] [--batch 32] [--threads N]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from _common import interleaved, median, print_result, row, set_threads  # noqa: E402

TARGET = 1.05


def _setup(size: int, batch: int, seed: int = 0):
    from classprune.lottery.losses import ClassDependentLoss
    from classprune.lottery.masks import full_mask
    from classprune.models.network import build_model
    from classprune.lottery.pruning import prune, rewind

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, size, size, generator=g)
    y = (torch.arange(batch) % 4 == 0).long()  # 1:3 imbalanced, both classes in every batch
    loss_fn = ClassDependentLoss([1.0, 5.0], 5.0, 1.0)
    dense = build_model(seed=seed)
    w0 = {n: t.clone() for n, t in dense.state_dict().items()}
    noisy = {n: t + 0.01 * torch.randn(t.shape, generator=g) for n, t in w0.items()}
    mask = prune(noisy, w0, full_mask(dense), 0.5)  # a realistic round-2 mask
    masked = build_model(seed=seed)
    masked.load_state_dict(rewind(w0, mask))
    masked_f = build_model(seed=seed)
    masked_f.load_state_dict(rewind(w0, mask))
    return x, y, loss_fn, dense, masked, masked_f, mask


def run(reps: int = 30, size: int = 64, batch: int = 32, threads: int | None = None, grad_clip: float = 1.0) -> dict:
    from classprune.lottery.masks import keep_bits
    from classprune.lottery.train import first_nonfinite, masked_step

    threads = set_threads(threads)
    x, y, loss_fn, dense, masked, masked_f, mask = _setup(size, batch)
    # what train_masked does to the mask: its bit pattern, once, on the parameters' device
    bits = keep_bits(mask, dict(masked.named_parameters()))
    opt_dense = torch.optim.SGD(dense.parameters(), lr=0.01, momentum=0.9)
    opt_masked = torch.optim.SGD(masked.parameters(), lr=0.01, momentum=0.9)
    opt_masked_f = torch.optim.SGD(masked_f.parameters(), lr=0.01, momentum=0.9)
    for model in (dense, masked, masked_f):
        model.train()

    def forward_backward(model, opt):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()

    def dense_step():
        forward_backward(dense, opt_dense)
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(dense.parameters(), grad_clip)
        opt_dense.step()

    def masked_step_():
        forward_backward(masked, opt_masked)
        masked_step(masked, opt_masked, bits, grad_clip)

    def checked_step():  # what train_masked does per step: the masked step plus the non-finite weight check
        forward_backward(masked_f, opt_masked_f)
        masked_step(masked_f, opt_masked_f, bits, grad_clip)
        assert first_nonfinite(masked_f) is None

    times = interleaved({"dense": dense_step, "masked": masked_step_, "checked": checked_step},
                        reps=reps, warmup=3)
    still_zero = all(torch.all(p[~mask[n]] == 0) for n, p in masked.named_parameters() if n in mask)
    t_d, t_m = median(times["dense"]), median(times["masked"])
    ratio = t_m / t_d
    t_f = median(times["checked"])
    notes = [
        f"training step, AlexNet-256-8-8-2 at {size} px, batch {batch}, {threads} torch threads, "
        f"median of {reps} interleaved steps each (after 3 warm-up steps)",
        f"  dense step {t_d * 1e3:.1f} ms, masked step {t_m * 1e3:.1f} ms: {ratio:.3f}x (target <= {TARGET}x); "
        f"pruned weights still exactly zero: {still_zero}",
        f"  masked step plus the per-step non-finite weight check (train_masked's default) "
        f"{t_f * 1e3:.1f} ms: {t_f / t_m:.3f}x the masked step (target for a per-step check: <= 1.01x)",
    ]
    return {
        "name": "masked_step",
        "rows": [row(f"masked vs dense training step, {size} px, batch {batch}", ours=t_m * 1e3, reference=t_d * 1e3,
                     unit="ms", ratio=ratio, ratio_name="time", target=f"<= {TARGET}x", met=ratio <= TARGET)],
        "notes": notes,
        "details": {"threads": threads, "reps": reps, "size": size, "batch": batch, "dense_s": times["dense"],
                    "masked_s": times["masked"], "checked_s": times["checked"], "check_ratio": t_f / t_m, "pruned_stay_zero": still_zero},
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    a = p.parse_args(argv)
    print_result(run(a.reps, a.size, a.batch, a.threads))


if __name__ == "__main__":
    main()
