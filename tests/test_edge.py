"""The edge deliverable: every ONNX file (fp32, fp16, int8; dense- and sparse-stored) evaluated as shipped in
onnxruntime, int8 that keeps pruned zeros, the test FNR bound with its confidence, predict on the device's path."""
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).parent))
from _export_inputs import exported_project, run_in, split_misses  # noqa: E402
from _project import set_params  # noqa: E402

from classprune.edge import onnx_files  # noqa: E402
from classprune.errors import CheckpointError, ExportError  # noqa: E402
from classprune.evaluation.metrics import allowed_misses, fnr_upper_bound, operating_threshold  # noqa: E402

EXPORT = "models/export/black"


def _predict(proj: Path, *args: str) -> subprocess.CompletedProcess:
    return run_in(proj, sys.executable, "-m", "classprune.cli", "predict", *args)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return exported_project(tmp_path_factory.mktemp("edge") / "proj")[0]


def _rows(proj: Path) -> dict[str, dict]:
    return {r["precision"]: r for r in csv.DictReader((proj / "reports/export.csv").open())}


def _deploy(proj: Path) -> dict:
    return json.loads((proj / EXPORT / "deploy.json").read_text())


def test_every_precision_is_written_evaluated_and_int8_ships(project):
    rows = _rows(project)
    assert set(rows) == {"fp32", "fp32_sparse", "fp16", "fp16_sparse", "int8", "int8_sparse"}
    assert all(r["shipped"] == "True" for r in rows.values()), {p: r["why"] for p, r in rows.items()}
    d = project / EXPORT
    for p, r in rows.items():
        assert int(r["bytes"]) == (d / r["file"]).stat().st_size
        assert float(r["test_auc"]) > 0.55 and int(r["test_n_positive"]) == 20  # alive, the whole test split
    size = {p: int(r["bytes"]) for p, r in rows.items()}
    assert size["int8"] < size["fp16"] < size["fp32"] and size["int8"] < size["fp32"] / 3
    assert all(size[f"{p}_sparse"] < size[p] / 4 for p in ("fp32", "fp16", "int8"))  # 1.56 % remaining
    # sparse initializers are densified at load: the same scores, so the same counts
    for p in ("fp32", "fp16", "int8"):
        assert (rows[p]["test_fn"], rows[p]["test_fp"]) == (rows[f"{p}_sparse"]["test_fn"], rows[f"{p}_sparse"]["test_fp"])
    metrics = json.loads((project / "reports/export.json").read_text())
    assert set(metrics["black"]) == set(rows) and metrics["black"]["int8"]["shipped"] is True


@pytest.mark.parametrize("precision,sparse", [("fp32", False), ("fp16", False), ("int8", False), ("int8", True)])
def test_predict_on_the_test_split_makes_the_decisions_the_report_counted(project, precision, sparse):
    """The device's path (image files -> decode -> onnxruntime -> file's threshold) gives the export table's counts."""
    proc = _predict(project, "--model", EXPORT, "--split", "test", "--precision", precision,
                    *(["--sparse"] if sparse else []))
    assert proc.returncode == 0, proc.stderr
    fn, fp = split_misses(project, proc.stdout)
    row = _rows(project)[precision + ("_sparse" if sparse else "")]
    assert (fn, fp) == (int(row["test_fn"]), int(row["test_fp"]))


def test_int8_keeps_every_pruned_zero_with_zero_points_at_zero(project):
    d = project / EXPORT
    ref = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(d / "model.onnx")).graph.initializer}
    q = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(d / "model_int8.onnx")).graph.initializer}
    checked = 0
    for name, a in ref.items():
        if a.ndim >= 2 and f"{name}_quantized" in q:
            w = q[f"{name}_quantized"]
            assert w.dtype == np.int8 and np.all(w[a == 0] == 0) and np.all(q[f"{name}_zero_point"] == 0)
            checked += 1
    assert checked == 8  # 5 conv + 3 linear weights
    onnx_files.check_zeros(d / "model.onnx", d / "model_int8.onnx")


def test_a_moved_zero_is_caught(project, tmp_path):
    d = project / EXPORT
    model = onnx.load(str(d / "model_int8.onnx"))
    ref = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(d / "model.onnx")).graph.initializer}
    init = next(i for i in model.graph.initializer if i.name == "net.features.3.weight_quantized")
    w = numpy_helper.to_array(init).copy()
    w[ref["net.features.3.weight"] == 0] = 1  # what an asymmetric zero point would do to pruned weights
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(model, str(tmp_path / "moved.onnx"))
    with pytest.raises(ExportError, match="net.features.3.weight"):
        onnx_files.check_zeros(d / "model.onnx", tmp_path / "moved.onnx")


def test_int8_falls_back_to_fp32_for_a_node_that_will_not_run(project, tmp_path):
    """A quantized node onnxruntime cannot run (no kernel) is left in fp32, named, and the rest stays int8."""
    src = project / EXPORT / "model.onnx"
    first_conv = next(n.name for n in onnx.load(str(src)).graph.node if n.op_type == "Conv")
    calls = []

    def flaky(path, probe):
        calls.append(path)
        if len(calls) == 1:
            raise CheckpointError(f"cannot load ONNX model {path}: Could not find an implementation for "
                                  f"QLinearConv node with name '{first_conv}_quant'")
        onnx_files.run(onnx_files.session(path), [probe], path)

    rng = np.random.default_rng(0)
    excluded = onnx_files.quantize_int8(src, tmp_path / "q.onnx", [rng.standard_normal((4, 3, 64, 64), np.float32)],
                                        try_session=flaky)
    assert excluded == [first_conv] and len(calls) == 2
    names = {i.name for i in onnx.load(str(tmp_path / "q.onnx")).graph.initializer}
    assert "net.features.0.weight" in names and "net.features.0.weight_quantized" not in names
    assert "net.features.3.weight_quantized" in names


def test_deploy_json_carries_the_test_fnr_bound_with_its_confidence(project):
    info = _deploy(project)
    bound, fp32 = info["fnr_bound"], info["onnx"]["fp32"]
    assert bound["split"] == "test" and bound["confidence"] == 0.95 and bound["positives"] == 20
    assert bound["misses"] == fp32["test"]["fn"] and bound["fnr"] == fp32["test"]["fnr"]
    n, k = bound["positives"], bound["misses"]
    # Clopper-Pearson one-sided upper bound = the beta quantile; at 0 misses it has a closed form
    from scipy.stats import beta

    assert bound["upper_bound"] == pytest.approx(beta.ppf(0.95, k + 1, n - k) if k < n else 1.0, rel=1e-9)
    assert bound["smallest_supported"] == pytest.approx(1 - 0.05 ** (1 / n), rel=1e-9)  # 13.9 % for 20 positives
    assert bound["meets_target"] is (bound["upper_bound"] <= 0.05)
    md = (project / "reports/export.md").read_text()
    assert "smallest FNR the test split can support at 95 % is 13.9 %" in md


def test_deploy_json_and_the_table_say_which_cpu_scored_the_files_and_how_int8_was_quantized(project):
    """int8 decisions can differ on a CPU without VNNI (issue 29): the export records where it was scored."""
    from classprune.config import load_params

    info, cpu = _deploy(project), onnx_files.cpu_features()
    seven_bit = load_params(project / "params.yaml").export.int8_reduce_range
    assert info["evaluated_on"] == json.loads(json.dumps(cpu)) and isinstance(info["evaluated_on"]["vnni"], bool)
    assert info["int8_reduce_range"] is seven_bit
    assert {r["evaluated_on"] for r in _rows(project).values()} == {onnx_files.cpu_text(cpu)}
    md = (project / "reports/export.md").read_text()
    bits = "7-bit (reduce_range)" if seven_bit else "8-bit"
    assert f"Files scored on {onnx_files.cpu_text(cpu)}; int8 weights {bits}." in md


def test_the_exact_bound_and_the_threshold_rules():
    assert fnr_upper_bound(0, 90, 0.95) == pytest.approx(1 - 0.05 ** (1 / 90))  # 3.3 %: the number
    assert fnr_upper_bound(1, 90, 0.95) > 0.05 > fnr_upper_bound(0, 90, 0.95)
    assert allowed_misses(90, 0.05) == 4 and allowed_misses(90, 0.05, 0.95) == 0
    assert allowed_misses(30, 0.05, 0.95) == -1  # 0 misses in 30 only bound FNR at 9.5 %
    assert allowed_misses(1000, 0.05, 0.95) > 30
    labels = np.array([1] * 90 + [0] * 10)
    scores = np.concatenate([np.arange(90) / 100, np.full(10, -1.0)])
    assert operating_threshold(labels, scores, 0.05) == pytest.approx(0.04)  # 4 positives below
    assert operating_threshold(labels, scores, 0.05, 0.95) == pytest.approx(0.0)  # none below


def test_the_bound_rule_does_not_ship_what_val_cannot_support(project, tmp_path):
    """20 val positives cannot bound FNR at 5 % with 95 % confidence: nothing ships, and the table says why."""
    work = tmp_path / "p"
    for rel in ("data", "models", "reports", "params.yaml", "stages"):
        (shutil.copytree if (project / rel).is_dir() else shutil.copy2)(project / rel, work / rel)
    set_params(work / "params.yaml", {"evaluate.threshold_rule": "bound", "export.precisions": ["fp32", "int8"]})
    shutil.rmtree(work / "models/export")
    proc = run_in(work, sys.executable, "stages/export.py")
    assert proc.returncode == 0, proc.stderr
    rows = _rows(work)
    assert set(rows) == {"fp32", "fp32_sparse", "int8", "int8_sparse"}
    assert all(r["shipped"] == "False" and "upper bound" in r["why"] and "20 val positives" in r["why"]
               for r in rows.values())
    assert not list((work / EXPORT).glob("*.onnx"))
    proc = _predict(work, "--model", EXPORT, "--split", "test")
    assert proc.returncode == 2 and "model.onnx was not shipped: val FNR upper bound" in proc.stderr


def _write_mismatched(path: Path) -> None:
    import torch

    torch.onnx.export(torch.nn.Linear(4, 2).eval(), (torch.zeros(1, 4),), str(path), input_names=["x"], dynamo=True)


@pytest.mark.parametrize("damage", ["truncated", "mismatched", "wrong_size", "not_shipped", "no_manifest"])
def test_bad_edge_input_is_one_line_and_nonzero(project, tmp_path, damage):
    d = tmp_path / "black"
    shutil.copytree(project / EXPORT, d)
    args = ["--model", str(d), "--split", "test", "--precision", "int8"]
    expect = "model_int8.onnx"
    if damage == "truncated":
        data = (d / "model_int8.onnx").read_bytes()
        (d / "model_int8.onnx").write_bytes(data[: len(data) // 3])
    elif damage == "mismatched":
        _write_mismatched(d / "model_int8.onnx")
        expect = "is not a classprune export"
    elif damage == "wrong_size":
        info = json.loads((d / "deploy.json").read_text())
        (d / "deploy.json").write_text(json.dumps(info | {"image_size": 48}))
        expect = "cannot take input of shape (40, 3, 48, 48)"
    elif damage == "not_shipped":
        info = json.loads((d / "deploy.json").read_text())
        info["onnx"]["int8"].update(shipped=False, why_not="val FPR 0.400 at the FNR target, more than 0.02 above")
        (d / "deploy.json").write_text(json.dumps(info))
        expect = "model_int8.onnx was not shipped: val FPR 0.400"
    else:
        args += ["--manifest", str(tmp_path / "nosuch.csv")]
        expect = "manifest not found"
    proc = _predict(project, *args)
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error: ") and expect in proc.stderr


def test_export_without_a_calibration_split_fails_cleanly_and_keeps_the_previous_export(project, tmp_path):
    work = tmp_path / "p"
    for rel in ("data", "models", "reports", "params.yaml", "stages"):
        (shutil.copytree if (project / rel).is_dir() else shutil.copy2)(project / rel, work / rel)
    before = {p.name: p.read_bytes() for p in (work / EXPORT).iterdir()}
    (work / "data/cache/train_images.npy").unlink()
    proc = run_in(work, sys.executable, "stages/export.py")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "no train arrays" in proc.stderr or "train" in proc.stderr
    assert {p.name: p.read_bytes() for p in (work / EXPORT).iterdir()} == before
    assert not [p for p in (work / "models").iterdir() if p.name.endswith(".tmp")]
