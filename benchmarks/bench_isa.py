"""The price of ``train.cpu_isa: avx2`` on this CPU: one masked training step with native kernels vs kernels
capped at AVX2 (what the embedded default runs so that every x86 kind gives the committed bits).

The cap must be set before torch starts, so each side runs in its own worker process (bench_step's masked
step, after warm-up steps); the workers alternate native, avx2, avx2, native, ... and each side reports
the median over all its steps. On a CPU whose best kernels are AVX2 both sides run the same kernels and
the ratio is about 1.

    python benchmarks/bench_isa.py [--reps 20] [--rounds 2] [--size 64] [--batch 32] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median, print_result, row  # noqa: E402


def _worker(reps: int, size: int, batch: int, threads: int) -> None:
    import time

    import torch

    import bench_step
    from classprune.lottery.masks import keep_bits
    from classprune.lottery.train import masked_step

    torch.set_num_threads(threads)
    x, y, loss_fn, _, model, _, mask = bench_step._setup(size, batch)
    bits = keep_bits(mask, dict(model.named_parameters()))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    times = []
    for i in range(reps + 3):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        masked_step(model, opt, bits, 1.0)
        if i >= 3:  # warm-up steps excluded
            times.append(time.perf_counter() - t0)
    print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(), "times": times}))


def _spawn(isa: str, reps: int, size: int, batch: int, threads: int) -> dict:
    from classprune.isa import PIN_ENV

    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")}
    env.update(PIN_ENV.get(isa, {}))
    out = subprocess.run([sys.executable, __file__, "--worker", "--reps", str(reps), "--size", str(size),
                          "--batch", str(batch), "--threads", str(threads)],
                         env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run(reps: int = 20, rounds: int = 2, size: int = 64, batch: int = 32, threads: int = 1) -> dict:
    times: dict[str, list[float]] = {"native": [], "avx2": []}
    caps: dict[str, str] = {}
    for r in range(rounds):
        for isa in (("native", "avx2") if r % 2 == 0 else ("avx2", "native")):
            res = _spawn(isa, reps, size, batch, threads)
            times[isa] += res["times"]
            caps[isa] = res["capability"]
    t_n, t_a = median(times["native"]), median(times["avx2"])
    ratio = t_a / t_n
    return {
        "name": "cpu_isa",
        "rows": [row(f"masked training step, {size} px, batch {batch}, {threads} thread: cpu_isa avx2 vs native",
                     ours=t_a * 1e3, reference=t_n * 1e3, unit="ms", ratio=ratio, ratio_name="time",
                     target="informational (the price of bit-identical results across CPU kinds)", met=True)],
        "notes": [f"cpu_isa: native runs {caps['native']} kernels, avx2 runs {caps['avx2']}; "
                  f"median of {len(times['native'])} steps each from {rounds} alternating worker processes: "
                  f"native {t_n * 1e3:.1f} ms, avx2 {t_a * 1e3:.1f} ms, {ratio:.2f}x"],
        "details": {"capabilities": caps, "native_s": times["native"], "avx2_s": times["avx2"], "threads": threads},
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=2, help="worker processes per side, alternating")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the default pipeline trains at 1)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        _worker(a.reps, a.size, a.batch, a.threads)
    else:
        print_result(run(a.reps, a.rounds, a.size, a.batch, a.threads))


if __name__ == "__main__":
    main()
