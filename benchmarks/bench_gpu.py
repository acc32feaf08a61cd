"""Training throughput on one device: the pipeline's masked AlexNet-256-8-8-2 vs the same torchvision AlexNet in a bare loop.

Why: the GPU path (train.device: auto | cuda) must not cost much over the plainest training loop torch offers.
Ours is ``classprune.lottery.train.train_masked`` as an LT round runs it (a 1.56 %-remaining mask of the pipeline's
rule, the black scenario's class-dependent loss, SGD with momentum and clipping, pruned gradients and
weights zeroed every step, the per-step loss check); the reference is the same network (torchvision's
AlexNet with the 256-8-8-2 head, ``classprune.models.network.build_model``, unmasked) trained by the plainest loop:
CrossEntropyLoss, plain SGD, nothing else. So the ratio is the cost of the pipeline's machinery, not of the
network (torchvision's default 4096-wide head would make the reference 20 times larger). Same device, batch, image size and steps, on random
tensors already on the device (no data loading), deterministic kernels as the stages set them; repetitions
alternate (ABBA) and each side reports the median. Target: ours >= 0.8x the reference's images per second.
Then the paper profile's stage times at a small scale: a few steps of an LT round and one evaluation pass at
the profile's image size (224 px), through the same library functions (not a DVC run).

    python benchmarks/bench_gpu.py --tiny --device cpu          # the CI size (seconds)
    python benchmarks/bench_gpu.py [--device auto|cpu|cuda] [--size 64] [--batch 32] [--steps 20] [--reps 5]
    on a GPU machine: python benchmarks/bench_gpu.py --device cuda --size 224 --batch 64 --steps 50
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from _common import ROOT, interleaved, machine, median, print_result, row, set_threads  # noqa: E402

TARGET = 0.8
KEEP = 0.0156  # remaining fraction of the masked candidate: 7 rounds at rate 0.5
SCENARIO = "black"  # gamma 1 then 5, lambda 5: its round > 1 loss
TINY = {"size": 64, "batch": 4, "steps": 2, "reps": 2, "paper_steps": 2, "paper_batches": 1, "paper_batch": 4}


def paper_params():
    """params.yaml with profiles/paper.yaml applied, validated as the stages validate it."""
    from classprune.config import Params
    from classprune.profiles import merged_params

    return Params.model_validate(merged_params(ROOT / "profiles" / "paper.yaml", ROOT / "params.yaml",
                                               ROOT / "profiles"))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batch(batch: int, size: int, device: torch.device, seed: int = 0):
    """Random images (normalised-like) and 1:3 imbalanced labels, both classes in every batch of >= 2."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, size, size, generator=g)
    y = (torch.arange(batch) % 4 == 0).long()
    return x.to(device), y.to(device)


def candidate(params, device: torch.device, keep: float = KEEP, seed: int = 0):
    """AlexNet-256-8-8-2 rewound to W0 under a ``keep`` mask of the profile's pruning rule, and its loss."""
    from classprune.lottery.losses import ClassDependentLoss, resolve_gamma
    from classprune.lottery.masks import full_mask
    from classprune.models.network import build_model
    from classprune.lottery.pruning import keep_top, rewind

    model = build_model("none", seed=seed, dropout=params.model.dropout)
    w0 = {n: t.clone() for n, t in model.state_dict().items()}
    p = params.prune
    mask = keep_top({n: t.abs() for n, t in w0.items()}, full_mask(model, p.include_biases, p.ignore), keep, p.scope)
    model.load_state_dict(rewind(w0, mask))
    sc = params.scenarios[SCENARIO]
    gamma = resolve_gamma(sc.gamma_rest, [params.data.n_negative, params.data.n_positive])
    return model.to(device), mask, ClassDependentLoss(gamma, sc.lam, params.train.margin).to(device)


def pruned_zero(model: torch.nn.Module, mask: dict) -> bool:
    params = dict(model.named_parameters())
    return all(bool((params[n].detach()[~m.to(params[n].device)] == 0).all()) for n, m in mask.items())


def paper_stage(params, device: torch.device, steps: int, n_batches: int, batch: int | None = None) -> dict:
    """Seconds per LT-round step (after one warm-up step) and per evaluated image, at the profile's size."""
    from classprune.evaluation.metrics import predict
    from classprune.lottery.train import sgd, train_masked

    size, tb = params.data.image_size, batch or params.train.batch_size
    eb = batch or params.evaluate.batch_size
    model, mask, loss = candidate(params, device)
    x, y = _batch(tb, size, device, seed=1)
    stamps: list[float] = []

    def stamp(step: int, m: torch.nn.Module) -> None:
        _sync(device)
        stamps.append(time.perf_counter())

    train_masked(model, mask, [(x, y)], loss, steps + 1, **sgd(params.train), desc="paper round", on_step=stamp)
    step_s = (stamps[-1] - stamps[0]) / steps
    xe, ye = _batch(eb, size, device, seed=2)
    predict(model, [(xe, ye)])  # warm-up: kernels chosen, memory allocated
    t0 = time.perf_counter()
    predict(model, [(xe, ye)] * n_batches)  # returns host arrays: synchronised
    eval_s = (time.perf_counter() - t0) / (n_batches * eb)
    return {"image_size": size, "train_batch": tb, "train_steps": steps, "step_s": step_s, "eval_batch": eb,
            "eval_batches": n_batches, "eval_s_per_image": eval_s, "pruned_stay_zero": pruned_zero(model, mask)}


def run(device: str = "auto", size: int = 64, batch: int = 32, steps: int = 20, reps: int = 5,
        threads: int | None = None, paper_steps: int = 5, paper_batches: int = 2, paper_batch: int | None = None) -> dict:
    from classprune.device import resolve_device, setup_determinism
    from classprune.models.network import build_model
    from classprune.lottery.train import sgd, train_masked

    threads = set_threads(threads)
    dev = resolve_device(device)
    setup_determinism(dev)  # what every stage does; both loops run under it
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({machine()['cpu_model']})"
    params = paper_params()
    t = params.train
    x, y = _batch(batch, size, dev)
    model, mask, loss = candidate(params, dev)
    torch.manual_seed(0)
    ref = build_model("none", seed=1, dropout=params.model.dropout).to(dev).train()
    ce = torch.nn.CrossEntropyLoss()
    opt = torch.optim.SGD(ref.parameters(), lr=t.lr, momentum=t.momentum)

    def ours():
        train_masked(model, mask, [(x, y)], loss, steps, **sgd(t), desc="bench")
        _sync(dev)

    def reference():
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            ce(ref(x), y).backward()
            opt.step()
        _sync(dev)

    times = interleaved({"ours": ours, "reference": reference}, reps=reps, warmup=1)
    stay_zero = pruned_zero(model, mask)
    ips = {k: batch * steps / median(v) for k, v in times.items()}
    ratio = ips["ours"] / ips["reference"]
    paper = paper_stage(params, dev, paper_steps, paper_batches, paper_batch)
    notes = [
        f"training throughput on {dev} ({name}), {size} px, batch {batch}, {steps} steps per repetition, "
        f"median of {reps} interleaved repetitions each (after 1 warm-up), {threads} torch threads",
        f"  masked AlexNet-256-8-8-2 (train_masked, {KEEP:.2%} remaining, {SCENARIO}'s loss) {ips['ours']:.1f} img/s, "
        f"the same network in a bare loop {ips['reference']:.1f} img/s: {ratio:.3f}x (target >= {TARGET}x); "
        f"pruned weights still exactly zero: {stay_zero}",
        f"paper profile at a small scale ({paper['image_size']} px, {dev}): LT round step "
        f"{paper['step_s'] * 1e3:.1f} ms at batch {paper['train_batch']} (mean of {paper['train_steps']} steps after "
        f"1 warm-up step; {t.iterations} steps a round), evaluation {paper['eval_s_per_image'] * 1e3:.2f} ms per "
        f"image ({paper['eval_batches']} batch(es) of {paper['eval_batch']} after 1 warm-up batch)",
    ]
    return {
        "name": "gpu",
        "rows": [row(f"masked AlexNet-256-8-8-2 (train_masked) vs the same network in a bare loop, {dev.type}, {size} px, batch {batch}",
                     ours=ips["ours"], reference=ips["reference"], unit="img/s", ratio=ratio,
                     ratio_name="throughput", target=f">= {TARGET}x", met=ratio >= TARGET)],
        "notes": notes,
        "details": {"device": str(dev), "device_name": name, "threads": threads, "size": size, "batch": batch,
                    "steps": steps, "reps": reps, "ours_s": times["ours"], "reference_s": times["reference"],
                    "ours_img_s": ips["ours"], "reference_img_s": ips["reference"], "ratio": ratio,
                    "finite": all(math.isfinite(v) and v > 0 for v in ips.values()),
                    "pruned_stay_zero": stay_zero, "paper": paper},
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto", help="auto (a GPU when torch sees one) | cpu | cuda | cuda:N")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=20, help="training steps per timed repetition")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--paper-steps", type=int, default=5, help="timed LT-round steps at the paper's size")
    p.add_argument("--paper-batches", type=int, default=2, help="timed evaluation batches at the paper's size")
    p.add_argument("--paper-batch", type=int, help="batch of both (default: the profile's train / evaluate)")
    p.add_argument("--tiny", action="store_true", help=f"the CI size, overriding the sizes above: {TINY}")
    a = p.parse_args(argv)
    sizes = TINY if a.tiny else {"size": a.size, "batch": a.batch, "steps": a.steps, "reps": a.reps,
                                 "paper_steps": a.paper_steps, "paper_batches": a.paper_batches,
                                 "paper_batch": a.paper_batch}
    print_result(run(a.device, threads=a.threads, **sizes))


if __name__ == "__main__":
    main()
