"""A channel ticket's training step: the compact network (pruned channels removed) vs the masked full one.

Per channel level L = 0..6 (each conv layer keeps (1 - p)^L of its channels, p = 1 - sqrt(0.5): what
``prune.rate`` 0.5 gives), one SGD step of the pipeline's loss (ClassDependentLoss, gamma 1/5, lambda 5,
momentum 0.9, clip 2.0) at 64 px, batch 32: the masked step as ``train_masked`` runs a weight ticket, and the
same step on ``classprune.lottery.channels.compact``'s network, which is what a channel round trains. Interleaved
medians, so the ratio holds on a busy machine. MACs are Torch-Pruning's count of the compact network.

    python benchmarks/bench_channel_step.py [--reps 20] [--threads 1]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from _common import interleaved, median, print_result, row, set_threads  # noqa: E402

LEVELS = 7
TARGET = 0.5  # the sparsest level's compact step at most half the masked one


def _steppers(level: int, size: int, batch: int):
    from classprune.lottery import channel_criteria as crit
    from classprune.lottery import channels as ch
    from classprune.lottery.losses import ClassDependentLoss
    from classprune.lottery.masks import apply_mask, keep_bits
    from classprune.models.network import build_model
    from classprune.lottery.train import masked_step

    model = build_model(seed=0, dropout=0.0)
    units = ch.units(model, "conv", size)
    mask = ch.full_channel_mask(model, units)
    for _ in range(level):
        mask = crit.prune_channels(model, mask, units, 1 - 0.5 ** 0.5, "layerwise", "l1", size)
    apply_mask(model, mask)
    small = ch.compact(model, mask, units, size)
    macs = ch.macs_and_params(small, size)[0]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g)
    y = (torch.arange(batch) % 4 == 0).long()
    loss_fn = ClassDependentLoss([1.0, 5.0], 5.0, 1.0)
    bits = keep_bits(mask, dict(model.named_parameters()))
    steps = {}
    for name, net, b in (("masked", model, bits), ("compact", small, {})):
        net.train()
        opt = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9)

        def step(net=net, opt=opt, b=b):
            opt.zero_grad(set_to_none=True)
            loss_fn(net(x), y).backward()
            masked_step(net, opt, b, 2.0)
        steps[name] = step
    return steps, macs


def run(reps: int = 20, size: int = 64, batch: int = 32, threads: int | None = 1) -> dict:
    threads = set_threads(threads)
    levels, notes = [], [f"channel-ticket training step, AlexNet-256-8-8-2 at {size} px, batch {batch}, "
                          f"{threads} torch threads, median of {reps} interleaved steps each"]
    for level in range(LEVELS):
        steps, macs = _steppers(level, size, batch)
        times = interleaved(steps, reps=reps, warmup=2)
        t_m, t_c = median(times["masked"]), median(times["compact"])
        levels.append({"level": level, "macs": macs, "masked_ms": t_m * 1e3, "compact_ms": t_c * 1e3,
                       "ratio": t_c / t_m})
        notes.append(f"  level {level}: {macs / 1e6:.2f} M MACs, masked {t_m * 1e3:.1f} ms, compact "
                     f"{t_c * 1e3:.1f} ms ({t_c / t_m:.2f}x)")
    chain_m, chain_c = sum(r["masked_ms"] for r in levels), sum(r["compact_ms"] for r in levels)
    notes.append(f"  a 7-round chain's steps: compact {chain_c / chain_m:.2f}x the masked chain's")
    last = levels[-1]
    return {
        "name": "channel_step",
        "rows": [row(f"channel ticket step at level {LEVELS - 1}, compact vs masked, {size} px, batch {batch}",
                     ours=last["compact_ms"], reference=last["masked_ms"], unit="ms", ratio=last["ratio"],
                     ratio_name="time", target=f"<= {TARGET}x", met=last["ratio"] <= TARGET),
                 row("channel chain (7 rounds) training steps, compact vs masked", ours=chain_c, reference=chain_m,
                     unit="ms", ratio=chain_c / chain_m, ratio_name="time", target="< 1x", met=chain_c < chain_m)],
        "notes": notes,
        "details": {"threads": threads, "reps": reps, "size": size, "batch": batch, "levels": levels},
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the pipeline's train.threads: 1)")
    a = p.parse_args(argv)
    print_result(run(a.reps, a.size, a.batch, a.threads))


if __name__ == "__main__":
    main()
