"""Prune + rewind of the full AlexNet-256-8-8-2: classprune.lottery.pruning vs a per-index Python loop.

The reference is the loop style of the authors' released code: for each tensor compute the score, find the
indices to prune with ``torch.topk``, then write 0 into the mask and into the rewound weights one index at a
time in a Python ``for`` loop. Looping over all ~1.24M indices of one round takes tens of seconds, so each
repetition loops over a random subset of the indices (``--subset``, spread over the tensors in proportion
to their size) and the loop time is extrapolated linearly per index; the vectorised part of the reference
(scores and ``topk``) is timed in full. The reference's pruned set is checked against ours.

    python benchmarks/bench_prune.py [--reps 5] [--subset 20000] [--threads N]
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from _common import median, print_result, row, set_threads  # noqa: E402

TARGET = 1000.0
RATE = 0.5


def _state(seed: int = 0):
    """W0, a 'trained' state (W0 plus small updates) and the all-ones mask of round 1."""
    from classprune.lottery.masks import full_mask
    from classprune.constants import NUM_PARAMETERS
    from classprune.models.network import build_model, count_parameters

    model = build_model(seed=seed)
    assert count_parameters(model) == NUM_PARAMETERS
    w0 = {n: t.detach().clone() for n, t in model.state_dict().items()}
    g = torch.Generator().manual_seed(seed + 1)
    trained = {n: t + 0.01 * t.abs().mean() * torch.randn(t.shape, generator=g) for n, t in w0.items()}
    return w0, trained, full_mask(model)


def ours(trained, w0, mask):
    from classprune.lottery.pruning import prune, rewind

    new_mask = prune(trained, w0, mask, RATE)
    return new_mask, rewind(w0, new_mask)


def reference(trained, w0, mask, subset: int, rng: torch.Generator):
    """The per-index loop; returns (mask, rewound, seconds vectorised, seconds looped, looped, total)."""
    t0 = time.perf_counter()
    new_mask = {n: m.clone() for n, m in mask.items()}
    rewound = {n: t.clone() for n, t in w0.items()}
    plan = []
    for n, m in mask.items():
        score = trained[n].abs() - w0[n].abs()
        remaining = int(m.sum())
        n_prune = remaining - min(remaining, max(1, round(remaining * (1 - RATE))))
        flat = torch.where(m.reshape(-1), score.reshape(-1), torch.inf)  # pruned already: never again
        idx = torch.topk(flat, n_prune, largest=False).indices  # the smallest scores go
        plan.append((n, idx))
    total = sum(len(idx) for _, idx in plan)
    t_vector = time.perf_counter() - t0

    looped = 0
    t_loop = 0.0
    for n, idx in plan:
        take = min(len(idx), math.ceil(subset * len(idx) / total))
        chosen = idx[torch.randperm(len(idx), generator=rng)[:take]].tolist()
        m_flat, w_flat = new_mask[n].view(-1), rewound[n].view(-1)
        t1 = time.perf_counter()
        for i in chosen:  # the per-index loop being measured
            m_flat[i] = False
            w_flat[i] = 0.0
        t_loop += time.perf_counter() - t1
        looped += take
        # finish the rest untimed, so the result can be checked against ours
        m_flat[idx] = False
        w_flat[idx] = 0.0
    return new_mask, rewound, t_vector, t_loop, looped, total


def _equivalent(mask_a, mask_b, rewound_a, rewound_b, trained, w0) -> bool:
    """Same pruned set, up to the choice among weights whose score ties at the threshold."""
    for n in mask_a:
        a, b = mask_a[n], mask_b[n]
        if int(a.sum()) != int(b.sum()):
            return False
        differ = a != b
        if differ.any():
            score = trained[n].abs() - w0[n].abs()
            if not torch.all(score[differ] == score[differ][0]):
                return False
        if not torch.equal(rewound_a[n][a & b], rewound_b[n][a & b]) or torch.any(rewound_a[n][~a] != 0) \
                or torch.any(rewound_b[n][~b] != 0):
            return False
    return True


def run(reps: int = 5, subset: int = 20_000, threads: int | None = None) -> dict:
    threads = set_threads(threads)
    w0, trained, mask = _state()
    rng = torch.Generator().manual_seed(0)
    ours(trained, w0, mask)  # warm-up
    t_ours, t_ref, t_vec, per_index = [], [], [], []
    looped = total = 0
    for rep in range(reps):
        order = ("ours", "ref") if rep % 2 == 0 else ("ref", "ours")
        for which in order:
            if which == "ours":
                t0 = time.perf_counter()
                new_mask, rewound = ours(trained, w0, mask)
                t_ours.append(time.perf_counter() - t0)
            else:
                ref_mask, ref_rewound, tv, tl, looped, total = reference(trained, w0, mask, subset, rng)
                t_vec.append(tv)
                per_index.append(tl / looped)
                t_ref.append(tv + tl / looped * total)
    same = _equivalent(new_mask, ref_mask, rewound, ref_rewound, trained, w0)
    n_params = sum(t.numel() for t in w0.values())
    t_o, t_r = median(t_ours), median(t_ref)
    ratio = t_r / t_o
    notes = [
        f"prune+rewind, AlexNet-256-8-8-2 ({n_params:,} params, {len(mask)} prunable tensors), round 1 "
        f"(prune {total:,} of {n_params:,} weights at rate {RATE}), {threads} torch threads, "
        f"median of {reps} interleaved repetitions",
        f"  classprune.lottery.pruning.prune + rewind: {t_o * 1e3:.1f} ms",
        f"  per-index loop reference: vectorised part (scores + topk) {median(t_vec) * 1e3:.1f} ms measured; "
        f"loop measured on {looped:,} random indices ({median(per_index) * 1e6:.2f} us per index) and "
        f"extrapolated linearly to all {total:,}: {t_r:.2f} s",
        f"  same pruned set and rewound weights as the reference (up to ties at the threshold): {same}",
        f"  speed-up {ratio:.0f}x (target >= {TARGET:.0f}x)",
    ]
    return {
        "name": "prune_rewind",
        "rows": [row("prune + rewind, AlexNet 2.47M params (loop extrapolated)", ours=t_o * 1e3, reference=t_r * 1e3,
                     unit="ms", ratio=ratio, ratio_name="faster", target=f">= {TARGET:.0f}x", met=ratio >= TARGET,
                     note=f"loop timed on {looped} indices, extrapolated to {total}")],
        "notes": notes,
        "details": {"threads": threads, "reps": reps, "ours_s": t_ours, "reference_s": t_ref,
                    "reference_vectorised_s": t_vec, "reference_loop_s_per_index": per_index,
                    "indices_looped": looped, "indices_total": total, "same_result": same},
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--subset", type=int, default=20_000, help="indices looped per repetition (extrapolated)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    a = p.parse_args(argv)
    print_result(run(a.reps, a.subset, a.threads))


if __name__ == "__main__":
    main()
