"""benchmarks/bench_channels.py: what its latency table stands for, and the frontier it draws.

reports/channel_latency.csv holds one latency per channel level for every seed, because with the layerwise scope each layer
keeps its share of its live channels whatever the weights: checked here on two different networks. The
frontier puts weight tickets at the dense file's latency and channel tickets at their level's."""
import importlib.util
import sys
from pathlib import Path

import pandas as pd
import torch

from classprune.lottery.channel_criteria import prune_channels
from classprune.lottery.channels import alive, full_channel_mask, units
from classprune.lottery.masks import apply_mask
from classprune.models.network import build_model

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _bench():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_channels", BENCH / "bench_channels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _counts(seed: int, rounds: int = 7, rate: float = 0.2929) -> list[list[int]]:
    torch.manual_seed(seed)
    model = build_model(seed=seed, dropout=0.0).eval()
    with torch.no_grad():
        for p in model.parameters():  # weights unlike the other network's, as a trained ticket's would be
            p.mul_(torch.rand_like(p) * 2)
    unit_list = units(model, "conv", 64)
    mask, out = full_channel_mask(model, unit_list), []
    for _ in range(rounds - 1):
        apply_mask(model, mask)
        mask = prune_channels(model, mask, unit_list, rate, "layerwise", "l1", 64)
        out.append([int(a.sum()) for a in alive(mask, unit_list).values()])
    return out


def test_layerwise_channel_counts_do_not_depend_on_the_weights():
    a, b = _counts(0), _counts(1)
    assert a == b
    assert a[-1] == [8, 24, 48, 32, 32]  # the round-7 architecture of the README's latency table


def test_frontier_places_weight_tickets_at_dense_latency(tmp_path):
    bench = _bench()
    curves = tmp_path / "curves"
    curves.mkdir()
    for method, kind in (("black", "scenario"), ("black-channel", "channel"), ("black-channel-reinit", "reinit")):
        pd.DataFrame({"method": method, "kind": kind, "round": [1, 2], "auc": [0.95, 0.94], "auc_ci95": [0.01, 0.02],
                      "fnr": [0.2, 0.1], "fnr_ci95": [0.05, 0.05]}).to_csv(curves / f"{method}.csv", index=False)
    table = [{"source": "dense" if k == 0 else "level", "round": k, "precision": p, "threads": 1,
              "batch1_ms": 2.0 / (k + 1)} for k in (0, 1, 2) for p in ("fp32", "int8")]
    out = tmp_path / "frontier.png"
    assert bench.frontier(table, curves, out) == str(out)
    assert out.stat().st_size > 10_000
    # nothing to draw without channel tickets
    (curves / "black-channel.csv").unlink()
    (curves / "black-channel-reinit.csv").unlink()
    assert bench.frontier(table, curves, tmp_path / "none.png") == ""
