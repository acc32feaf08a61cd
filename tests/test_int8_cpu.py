"""int8 files score the same on a CPU without VNNI (issue 29): onnxruntime's AVX2 kernels without VNNI sum
u8 x s8 pairs in 16 bits and can saturate, so today's 8-bit weights may score differently there; 7-bit weights
(``reduce_range``) cannot. The other CPU is QEMU's user-mode Haswell (AVX2, no VNNI): onnxruntime picks its
kernels from CPUID, so under QEMU it runs the non-VNNI path. .ci/run installs qemu-user."""
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

import int8_cpu  # noqa: E402
from classprune.edge import onnx_files  # noqa: E402
from classprune.models.network import build_model  # noqa: E402

emulated = [pytest.mark.slow, pytest.mark.skipif(shutil.which("qemu-x86_64") is None,
                                                  reason="qemu-user not installed (.ci/run installs it)")]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("int8")
    torch.manual_seed(0)
    onnx_files.export_onnx(build_model(seed=0, dropout=0.0).eval(), 64, d / "fp32.onnx", {})
    calib = [np.random.default_rng(i).standard_normal((32, 3, 64, 64)).astype(np.float32) for i in range(2)]
    for name, rr in (("int8", False), ("int8_rr", True)):
        onnx_files.quantize_int8(d / "fp32.onnx", d / f"{name}.onnx", calib, reduce_range=rr)
    return d


@emulated[0]
@emulated[1]
def test_reduce_range_int8_scores_bit_identically_without_vnni(files):
    x = np.random.default_rng(7).standard_normal((8, 3, 64, 64)).astype(np.float32)
    native = int8_cpu.score_native(files / "int8_rr.onnx", x)
    emulated = int8_cpu.score_emulated(files / "int8_rr.onnx", x)
    assert np.array_equal(native, emulated)
    if onnx_files.cpu_features().get("vnni"):
        # the emulated CPU really runs other kernels: the 8-bit file's scores move there
        assert not np.array_equal(int8_cpu.score_native(files / "int8.onnx", x),
                                  int8_cpu.score_emulated(files / "int8.onnx", x))


def test_the_choice_rule_takes_only_a_portable_file_that_ships():
    rows = [{"candidate": "s8s8", "cpu": "native", "split": "val", "flips_vs_other_cpu": 2, "ships_on_val": True, "fpr": 0.10},
            {"candidate": "s8s8_reduce_range", "cpu": "native", "split": "val", "flips_vs_other_cpu": 0,
             "ships_on_val": True, "fpr": 0.12},
            {"candidate": "fp32", "cpu": "native", "split": "val", "flips_vs_other_cpu": 0, "ships_on_val": True, "fpr": 0.09}]
    assert int8_cpu.choose(rows) == "s8s8_reduce_range"
    rows[1]["ships_on_val"] = False
    assert int8_cpu.choose(rows) is None
