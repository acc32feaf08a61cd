"""The channel ticket shipped physically smaller (classprune.edge.compaction, stage export_ch): its pruned channels
removed by Torch-Pruning, the compact ONNX files (fp32, int8) computing the masked network's logits and
evaluated as shipped, deploy.json, `classprune predict --granularity channel`, and bad input."""
from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _export_inputs import THRESHOLD, pruned_round, run_in, split_misses, write_images_and_cache  # noqa: E402
from _project import ROOT, write_profile  # noqa: E402

from classprune.lottery import channel_criteria as crit  # noqa: E402
from classprune.lottery import channels as ch  # noqa: E402
from classprune.edge import shipped  # noqa: E402
from classprune.edge import onnx_files
from classprune.lottery.masks import remaining, save_mask  # noqa: E402
from classprune.models.network import build_model  # noqa: E402

RATE = 1 - 0.5 ** 0.5  # the default channel rate (prune.rate 0.5)
ROUND = "models/black-channel/seed_0/round_3"
EXPORT = "models/export_channel/black"
CONVS = ["features.0", "features.3", "features.6", "features.8", "features.10"]


def _network(state: dict) -> torch.nn.Module:
    model = build_model()
    model.load_state_dict(state)
    return model.eval()


def channel_round(root: Path) -> tuple[Path, Path]:
    """Round 3 of a channel ticket as lt_ch leaves it: _export_inputs' live path (a network that scores),
    its channels pruned twice by the pipeline's own criterion (l1, layerwise), pruned channels exactly 0."""
    weights, _ = pruned_round(root / "weight_ticket", 0.015625)
    state = torch.load(weights, weights_only=True)
    model = _network(state)
    units = ch.units(model, "conv", 64)
    mask = ch.full_channel_mask(model, units)
    for _ in range(2):
        mask = crit.prune_channels(model, mask, units, RATE, "layerwise", "l1", 64)
    assert all(bool(live[0]) for live in ch.alive(mask, units).values()), "the live path must survive"
    state = {n: t.masked_fill(~mask[n], 0.0) if n in mask else t for n, t in state.items()}
    torch.save(state, root / "weights.pt")
    save_mask(mask, root / "mask.pt")
    shutil.rmtree(root / "weight_ticket")
    return root / "weights.pt", root / "mask.pt"


def write_selection(proj: Path, entry: dict | None, weights: str = f"{ROUND}/weights.pt") -> None:
    sel = {"black": entry if entry is None else {
        "seed": 0, "round": 3, "remaining": entry["remaining"], "remaining_all": entry["remaining"],
        "weights": weights, "mask": f"{ROUND}/mask.pt", "threshold": THRESHOLD, "threshold_logodds": 0.0,
        "threshold_rule": "point", "granularity": "channel", "chain": "black-channel", "macs": 1, "params": 1}}
    (proj / "reports").mkdir(exist_ok=True)
    (proj / "reports/selection_channel.json").write_text(json.dumps(sel))


def _inputs(proj: Path) -> None:
    """What export_ch reads: params.yaml (tiny profile), the decoded cache, a channel round, the selection."""
    proj.mkdir(parents=True)
    write_profile(proj / "params.yaml", "tiny")
    write_images_and_cache(proj)
    _, mask = channel_round(proj / ROUND)
    write_selection(proj, {"remaining": remaining(torch.load(mask, weights_only=True))})


def _stage(proj: Path, scenario: str = "black"):
    return run_in(proj, sys.executable, str(ROOT / "stages/export_ch.py"), "--scenario", scenario)


def _predict(proj: Path, *args: str):
    return run_in(proj, sys.executable, "-m", "classprune.cli", "predict", *args)


def _one_line_error(proc, *needles: str) -> None:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert all(n in lines[0] for n in needles), lines[0]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    proj = tmp_path_factory.mktemp("export_ch") / "proj"
    _inputs(proj)
    proc = _stage(proj)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proj


def _deploy(proj: Path) -> dict:
    return json.loads((proj / EXPORT / "deploy.json").read_text())


def _rows(proj: Path) -> dict[str, dict]:
    return {r["precision"]: r for r in csv.DictReader((proj / "reports/export_channel/black.csv").open())}


def test_the_compact_onnx_computes_the_masked_networks_logits_on_the_test_images(project):
    labels, xs = shipped.batches(project / "data/cache", "test", 16)
    xs = list(xs)
    masked = _network(torch.load(project / ROUND / "weights.pt", weights_only=True))
    with torch.no_grad():
        ref = torch.cat([masked(torch.from_numpy(x)) for x in xs]).numpy()
    sess = onnx_files.session(project / EXPORT / "model.onnx")
    logits = np.concatenate([sess.run(["logits"], {"image": x})[0] for x in xs])
    assert len(logits) == len(labels) == 40
    np.testing.assert_allclose(logits, ref, rtol=0, atol=1e-5)
    assert _deploy(project)["compact_check"]["max_abs_logit_diff"] <= 1e-5


def test_the_compact_file_has_fewer_channels_and_fewer_macs_than_the_dense_network(project):
    info = _deploy(project)
    mask = torch.load(project / ROUND / "mask.pt", weights_only=True)
    dense = _network(torch.load(project / ROUND / "weights.pt", weights_only=True))
    live = ch.alive(mask, ch.units(dense, "conv", 64))
    shapes = {i.name: tuple(i.dims) for i in onnx.load(str(project / EXPORT / "model.onnx")).graph.initializer}
    for layer in CONVS:
        kept, full = int(live[layer].sum()), dict(dense.named_modules())[layer].out_channels
        assert shapes[f"net.{layer}.weight"][0] == kept < full, layer
        assert info["channels"][layer] == [kept, full]
    # the next conv reads only the kept channels, and so does the head's first layer
    assert shapes["net.features.3.weight"][1] == int(live["features.0"].sum())
    assert shapes["net.classifier.1.weight"][1] == int(live["features.10"].sum())
    dense_macs, dense_params = ch.macs_and_params(dense, 64)
    assert (info["dense_macs"], info["dense_params"]) == (dense_macs, dense_params)
    assert info["macs"] < dense_macs / 2 and info["params"] < dense_params / 2
    assert info["macs_ratio"] == pytest.approx(info["macs"] / dense_macs)
    assert (project / EXPORT / "model.onnx").stat().st_size < dense_params * 4 / 2  # fp32 bytes, smaller too
    md = (project / "reports/export_channel/black.md").read_text()
    assert f"{info['macs']:,}" in md and f"{dense_macs:,}" in md and f"{info['params']:,}" in md


def test_int8_runs_is_evaluated_as_shipped_and_the_table_says_so(project):
    rows = _rows(project)
    assert set(rows) == {"fp32", "int8"}, "a channel export has no fp16 and no sparse-stored files"
    for p, r in rows.items():
        assert r["shipped"] == "True", (p, r["why"])
        assert float(r["test_auc"]) > 0.55 and int(r["test_n_positive"]) == 20
        assert int(r["bytes"]) == (project / EXPORT / r["file"]).stat().st_size
    assert int(rows["int8"]["bytes"]) < int(rows["fp32"]["bytes"]) / 2
    q = {i.name for i in onnx.load(str(project / EXPORT / "model_int8.onnx")).graph.initializer}
    assert "net.features.3.weight_quantized" in q
    metrics = json.loads((project / "reports/export_channel/black.json").read_text())["black"]
    assert metrics["int8"]["shipped"] is True and metrics["compact"]["macs"] == _deploy(project)["macs"]
    assert sorted(p.name for p in (project / EXPORT).iterdir()) == ["deploy.json", "model.onnx", "model_int8.onnx"]


def test_deploy_json_carries_granularity_costs_provenance_and_the_weight_exports_preprocessing(project):
    from classprune.edge.export import deploy_info

    info = _deploy(project)
    meta = json.loads((project / "data/cache/meta.json").read_text())
    weight_keys = set(deploy_info(meta, 0.5, "Positive", scenario="x", seed=0, k=1, weights="w", mask_path="m",
                                  remaining=1.0, nonzero=1))
    assert weight_keys <= set(info)
    assert info["granularity"] == "channel" and info["chain"] == "black-channel"
    assert (info["image_size"], info["mean"], info["std"]) == (64, meta["mean"], meta["std"])
    assert info["source_checkpoint"] == f"{ROUND}/weights.pt" and info["source_mask"] == f"{ROUND}/mask.pt"
    assert (info["scenario"], info["seed"], info["round"]) == ("black", 0, 3)
    assert info["files"] == {"onnx": "model.onnx"} and set(info["onnx"]) == {"fp32", "int8"}
    assert info["threshold"] == info["onnx"]["fp32"]["threshold"] and info["fnr_bound"]["positives"] == 20
    assert {"macs", "params", "dense_macs", "dense_params", "params_ratio", "channels"} <= set(info)
    assert info["evaluated_on"]["model"] == onnx_files.cpu_features()["model"] and "int8_reduce_range" in info
    props = {p.key: p.value for p in onnx.load(str(project / EXPORT / "model_int8.onnx")).metadata_props}
    assert float(props["threshold"]) == info["onnx"]["int8"]["threshold"]
    assert props["granularity"] == "channel" and json.loads(props["channels"])["features.0"] == info["channels"]["features.0"]


@pytest.mark.parametrize("how", [("--scenario", "black", "--granularity", "channel"),
                                 ("--model", EXPORT, "--granularity", "channel"), ("--model", EXPORT)])
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_predict_resolves_the_channel_export_and_makes_the_decisions_the_table_counted(project, how, precision):
    proc = _predict(project, *how, "--split", "test", "--precision", precision)
    assert proc.returncode == 0, proc.stderr
    fn, fp = split_misses(project, proc.stdout)
    row = _rows(project)[precision]
    assert (fn, fp) == (int(row["test_fn"]), int(row["test_fp"]))


def test_predict_by_scenario_defaults_to_the_weight_export(project):
    proc = _predict(project, "--scenario", "black", "--split", "test")
    _one_line_error(proc, "no exported model at models/export/black")


@pytest.mark.parametrize(("args", "needles"), [
    (("--scenario", "black", "--granularity", "block"), ("unknown granularity 'block'", "weight or channel")),
    (("--model", EXPORT, "--granularity", "weight"), (EXPORT, "channel export", "granularity weight")),
    (("--scenario", "black", "--granularity", "channel", "--precision", "fp16"), ("channel export", "fp32 and int8")),
    (("--model", EXPORT, "--sparse"), ("channel export", "fp32 and int8")),
    (("--model", EXPORT, "--runtime", "torch"), ("channel export", "runtime torch")),
])
def test_bad_predict_input_is_one_line_and_nonzero(project, args, needles):
    proc = _predict(project, *args, "--split", "test")
    _one_line_error(proc, *needles)
    assert proc.stdout == ""


def test_a_weight_export_dir_is_refused_as_channel_and_a_deploy_json_without_granularity_is_weight(project, tmp_path):
    d = tmp_path / "old"
    shutil.copytree(project / EXPORT, d)
    info = json.loads((d / "deploy.json").read_text())
    del info["granularity"]
    (d / "deploy.json").write_text(json.dumps(info))
    _one_line_error(_predict(project, "--model", str(d), "--granularity", "channel", "--split", "test"),
                    str(d), "weight export", "granularity channel")


def test_a_damaged_compact_model_is_one_line_and_nonzero(project, tmp_path):
    d = tmp_path / "black"
    shutil.copytree(project / EXPORT, d)
    data = (d / "model.onnx").read_bytes()
    (d / "model.onnx").write_bytes(data[: len(data) // 3])
    _one_line_error(_predict(project, "--model", str(d), "--granularity", "channel", "--split", "test"),
                    "model.onnx")


def _fresh(project: Path, dest: Path) -> Path:
    """A project with export_ch's inputs only (the fixture's cache and channel round, no export yet)."""
    dest.mkdir()
    for rel in ("params.yaml", "data", "models/black-channel", "reports/selection_channel.json"):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (project / rel).is_dir() else shutil.copy2)(project / rel, dest / rel)
    return dest


def test_a_selection_pointing_at_a_missing_checkpoint_is_one_line_and_writes_nothing(project, tmp_path):
    work = _fresh(project, tmp_path / "p")
    write_selection(work, {"remaining": 0.5}, weights=f"{ROUND}/nosuch.pt")
    proc = _stage(work)
    _one_line_error(proc, "checkpoint not found", "nosuch.pt")
    assert not (work / "models/export_channel").exists() and not (work / "reports/export_channel").exists()


def test_a_weight_mask_is_not_a_channel_ticket(project, tmp_path):
    work = _fresh(project, tmp_path / "p")
    weights, mask = pruned_round(work / ROUND, 0.015625)  # a weight ticket's round in the channel chain's place
    _one_line_error(_stage(work), "not a channel mask of prune.channel.layers")
    assert not (work / "models/export_channel").exists()


def test_a_null_selection_exports_nothing_says_so_and_still_writes_the_tables(project, tmp_path):
    work = _fresh(project, tmp_path / "p")
    write_selection(work, None)
    proc = _stage(work)
    assert proc.returncode == 0, proc.stderr
    said = [ln for ln in proc.stdout.splitlines() if "nothing exported" in ln]
    assert len(said) == 1 and said[0].startswith("export_ch: black:"), proc.stdout
    out = work / EXPORT
    assert [p.name for p in out.iterdir()] == ["index.json"]
    assert json.loads((out / "index.json").read_text())["exported"] is False
    tables = work / "reports/export_channel"
    assert sorted(p.name for p in tables.iterdir()) == ["black.csv", "black.json", "black.md"]
    assert json.loads((tables / "black.json").read_text()) == {}
    assert "black: no level met the FN budget" in (tables / "black.md").read_text()
    _one_line_error(_predict(work, "--scenario", "black", "--granularity", "channel", "--split", "test"),
                    "nothing exported", "FN budget")


def test_an_unknown_scenario_is_one_line(project, tmp_path):
    work = _fresh(project, tmp_path / "p")
    _one_line_error(_stage(work, "green"), "has no entry for green")
