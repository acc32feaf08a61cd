"""benchmarks/bench_gpu.py at its CI size on the CPU: both loops train, the ratio is reported, and the masked
candidate's pruned weights are still exactly zero after its steps (a throughput number of a loop that let
them grow back would measure the wrong thing)."""
import importlib.util
import math
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"


@pytest.fixture
def bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    module = importlib.util.module_from_spec(spec)
    threads = torch.get_num_threads()
    spec.loader.exec_module(module)
    yield module
    torch.set_num_threads(threads)  # run() sets its own


def test_tiny_cpu_run(bench):
    result = bench.run("cpu", threads=1, **bench.TINY)
    assert result["name"] == "gpu"
    d = result["details"]
    assert d["device"] == "cpu" and d["device_name"].startswith("CPU")
    for key in ("ours_img_s", "reference_img_s", "ratio"):
        assert math.isfinite(d[key]) and d[key] > 0, key
    (r,) = result["rows"]
    assert r["unit"] == "img/s" and r["ratio"] == pytest.approx(d["ours_img_s"] / d["reference_img_s"])
    assert r["target"] == ">= 0.8x" and r["met"] == (r["ratio"] >= 0.8)
    assert d["pruned_stay_zero"] is True
    paper = d["paper"]
    assert paper["image_size"] == 224 and paper["pruned_stay_zero"] is True
    assert paper["step_s"] > 0 and paper["eval_s_per_image"] > 0
    assert any("paper profile" in line for line in result["notes"])


def test_candidate_mask_is_sparse(bench):
    """The candidate really is pruned to about KEEP of its prunable weights, and starts from zeros there."""
    from classprune.lottery.masks import remaining

    model, mask, _ = bench.candidate(bench.paper_params(), torch.device("cpu"))
    assert remaining(mask) == pytest.approx(bench.KEEP, rel=0.05)
    assert bench.pruned_zero(model, mask)
