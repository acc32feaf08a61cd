"""What the training curves cost: an LT round's training steps with DVCLive logging every step vs without.

``classprune.lottery.train.train_masked`` on AlexNet-256-8-8-2 at 64 px, batch 32, one thread, a 1.56 % mask and
black's loss (ranking part on), ``--steps`` steps per repetition, with ``log=TrainLog(dir)`` (the loss parts
from the detached logits, lr, gradient norm, DVCLive's per-step TSV rows) and with ``log=None``,
repetitions interleaved (ABBA), medians. Target: under 2 % of a step.

    python benchmarks/bench_trainlog.py [--steps 40] [--reps 8]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from _common import interleaved, median, print_result, row, set_threads  # noqa: E402

TARGET = 1.02


def run(steps: int = 40, reps: int = 8, threads: int | None = 1) -> dict:
    from classprune.lottery.losses import ClassDependentLoss
    from classprune.lottery.masks import full_mask
    from classprune.models.network import build_model
    from classprune.lottery.pruning import keep_top
    from classprune.lottery.train import train_masked
    from classprune.lottery.trainlog import TrainLog

    threads = set_threads(threads)
    model = build_model("none", seed=0, dropout=0.0)
    mask = keep_top({n: p.detach().abs() for n, p in model.named_parameters()}, full_mask(model), 0.015625)
    g = torch.Generator().manual_seed(0)
    batch = (torch.randn(32, 3, 64, 64, generator=g), (torch.arange(32) % 5 == 0).long())
    loss = ClassDependentLoss([1.0, 5.0], lam=5.0)
    kw = {"lr": 0.02, "momentum": 0.9, "grad_clip": 2.0, "schedule": "cosine", "warmup": 2}
    with tempfile.TemporaryDirectory() as tmp:
        runs = iter(range(10**6))

        def logged():
            with TrainLog(Path(tmp) / f"run_{next(runs)}") as log:
                train_masked(model, mask, [batch], loss, steps, **kw, log=log)

        def plain():
            train_masked(model, mask, [batch], loss, steps, **kw)

        times = interleaved({"logged": logged, "plain": plain}, reps, warmup=1)
    ours, ref = median(times["logged"]) / steps, median(times["plain"]) / steps
    ratio = ours / ref
    notes = [f"training step with DVCLive logging vs without, 64 px, batch 32, {threads} thread(s), {steps} steps x "
             f"{reps} interleaved repetitions: {ours * 1e3:.2f} ms vs {ref * 1e3:.2f} ms per step, "
             f"{100 * (ratio - 1):+.2f} % (target < {100 * (TARGET - 1):.0f} %)"]
    return {"name": "trainlog", "notes": notes, "details": {"logged_s": times["logged"], "plain_s": times["plain"]},
            "rows": [row("training step with per-step DVCLive logging vs without (64 px, batch 32)", ours=ours * 1e3,
                         reference=ref * 1e3, unit="ms", ratio=ratio, ratio_name="time",
                         target=f"<= {TARGET}x", met=ratio <= TARGET)]}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--reps", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    print_result(run(a.steps, a.reps, a.threads))


if __name__ == "__main__":
    main()
