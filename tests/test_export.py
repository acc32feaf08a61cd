"""The deployable model: sparse files, ONNX, deploy.json, sizes, predict, DVC artifacts."""
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _project import ROOT  # noqa: E402

from classprune.edge import export as ex  # noqa: E402
from classprune.edge import sizes  # noqa: E402
from classprune.edge import sparse as sp  # noqa: E402
from classprune.errors import CheckpointError  # noqa: E402
from classprune.models.network import build_model  # noqa: E402
from _export_inputs import exported_project, pruned_round, run_in  # noqa: E402

META = {"image_size": 64, "mean": [0.45, 0.43, 0.41], "std": [0.2, 0.21, 0.19]}  # export_model's own tests
_pruned_round = pruned_round


def _meta(proj: Path) -> dict:
    return json.loads((proj / "data/cache/meta.json").read_text())


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A git + DVC copy of the project where the export stage's script ran on a selection.json."""
    return exported_project(tmp_path_factory.mktemp("export") / "proj")


@pytest.fixture(scope="module")
def batch():
    return torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(3)) * 2


def _checkpoint_model(weights: Path) -> torch.nn.Module:
    with torch.device("meta"):
        model = build_model()
    model.load_state_dict(torch.load(weights, weights_only=True), assign=True)
    return model.eval()


def test_stage_exports_the_selected_model_and_skips_null(project):
    proj, out = project
    d = proj / "models/export/black"
    info = json.loads((d / "deploy.json").read_text())
    onnx_files = {e["file"] for e in info["onnx"].values() if e["shipped"]}
    assert {"model.onnx", "model_sparse.onnx"} <= onnx_files
    assert sorted(p.name for p in d.iterdir()) == sorted(["deploy.json", "sparse_fp16.pt", "sparse_fp32.pt", *onnx_files])
    assert not (proj / "models/export/red").exists()
    assert "red: no level met the FN budget" in out
    assert json.loads((proj / "models/export/index.json").read_text())["not_exported"] == ["red"]
    meta = _meta(proj)
    assert (info["image_size"], info["mean"], info["std"]) == (64, meta["mean"], meta["std"])
    assert info["threshold"] == info["onnx"]["fp32"]["threshold"]  # chosen again on val from the file's scores
    assert info["round"] == 7 and info["source_checkpoint"] == "models/black/round_7/weights.pt"
    assert info["remaining"] == pytest.approx(0.015625, rel=0.01)
    assert info["nonzero"] == sum(int(m.sum()) for m in torch.load(proj / "models/black/round_7/mask.pt",
                                                                     weights_only=True).values())


def test_sparse_fp32_round_trip_gives_identical_logits(project, batch):
    proj, _ = project
    exported = sp.load_sparse(proj / "models/export/black/sparse_fp32.pt")
    with torch.no_grad():
        assert torch.equal(exported(batch), _checkpoint_model(proj / "models/black/round_7/weights.pt")(batch))


def test_sparse_files_load_with_weights_only_and_fp16_is_close(project, batch):
    proj, _ = project
    d = proj / "models/export/black"
    raw = torch.load(d / "sparse_fp16.pt", weights_only=True)
    assert raw["dtype"] == "float16" and raw["tensors"]["features.0.weight"]["values"].dtype == torch.float16
    # 1.56 % remaining: int32 indices are smaller than a bitmask, and chosen
    assert "indices" in raw["tensors"]["features.3.weight"]
    with torch.no_grad():
        ref = _checkpoint_model(proj / "models/black/round_7/weights.pt")(batch)
        half = sp.load_sparse(d / "sparse_fp16.pt")(batch)
    assert torch.allclose(half, ref, rtol=1e-2, atol=1e-2) and not torch.equal(half, ref)


def test_bitmask_is_chosen_when_it_is_smaller(tmp_path):
    weights, mask = _pruned_round(tmp_path, 0.125)
    sparse = sp.to_sparse(torch.load(weights, weights_only=True), torch.load(mask, weights_only=True))
    e = sparse["tensors"]["features.3.weight"]
    assert "bitmask" in e and "indices" not in e
    state = sp.from_sparse(sparse)
    assert all(torch.equal(state[n], t) for n, t in torch.load(weights, weights_only=True).items())


def test_onnx_agrees_with_torch_and_carries_the_metadata(project, batch):
    ort = pytest.importorskip("onnxruntime")
    import onnx

    proj, _ = project
    d = proj / "models/export/black"
    sess = ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"])
    logits, score = sess.run(["logits", "score"], {"image": batch.numpy()})
    with torch.no_grad():
        ref = _checkpoint_model(proj / "models/black/round_7/weights.pt")(batch)
    np.testing.assert_allclose(logits, ref.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(score, torch.softmax(ref, 1)[:, 1].numpy(), rtol=0, atol=1e-5)
    props = {p.key: p.value for p in onnx.load(str(d / "model.onnx")).metadata_props}
    info = json.loads((d / "deploy.json").read_text())
    assert float(props["threshold"]) == info["onnx"]["fp32"]["threshold"] and json.loads(props["mean"]) == _meta(proj)["mean"]
    assert int(props["image_size"]) == 64 and props["positive_class"] == "Positive"


def test_size_table_measures_the_files(project):
    proj, _ = project
    import csv

    rows = list(csv.DictReader((proj / "reports/export_sizes.csv").open()))
    assert [r["scenario"] for r in rows] == ["black"]
    r = rows[0]
    d = proj / "models/export/black"
    assert int(r["dense_bytes"]) == (proj / "models/black/round_7/weights.pt").stat().st_size
    assert int(r["sparse_fp16_bytes"]) == (d / "sparse_fp16.pt").stat().st_size
    assert int(r["sparse_fp16_bytes"]) <= 0.03 * int(r["dense_bytes"])  # the target at 1.56 %
    assert int(r["sparse_fp16_gz_bytes"]) < int(r["sparse_fp16_bytes"])
    md = sizes.export_sizes_markdown(proj / "reports/export_sizes.csv")
    assert "| black | 7 | 1.56 % |" in md


def _write_pngs(folder: Path, n: int = 3) -> list[Path]:
    from classprune.data.synthetic import render

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"img_{i}.png"
        Image.fromarray(render(80, 0, i % 2, i)).save(p)
        paths.append(p)
    return paths


def test_predict_scores_a_folder_with_the_checkpoints_scores(project, tmp_path):
    proj, _ = project
    paths = _write_pngs(tmp_path / "imgs")
    proc = run_in(proj, sys.executable, "-m", "classprune.cli", "predict", "--model", "models/export/black",
                "--images", str(tmp_path / "imgs"))
    assert proc.returncode == 0, proc.stderr
    lines = [ln.split("\t") for ln in proc.stdout.strip().splitlines()]
    assert [ln[0] for ln in lines] == [str(p) for p in paths]
    # the same preprocessing as the cache (decode, /255, mean/std) through the checkpoint
    from classprune.data.cache import decode

    x = torch.from_numpy(np.stack([decode(str(p), 64) for p in paths])).permute(0, 3, 1, 2).float() / 255
    meta = _meta(proj)
    x = (x - torch.tensor(meta["mean"]).view(1, 3, 1, 1)) / torch.tensor(meta["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = torch.softmax(_checkpoint_model(proj / "models/black/round_7/weights.pt")(x), 1)[:, 1]
    threshold = json.loads((proj / "models/export/black/deploy.json").read_text())["onnx"]["fp32"]["threshold"]
    for (path, score, decision), s in zip(lines, ref.tolist()):  # onnxruntime's scores, torch's within 1e-5
        assert float(score) == pytest.approx(s, abs=1e-5)
        assert decision == ("Positive" if float(score) >= threshold else "negative")


@pytest.mark.parametrize("damage", ["missing_dir", "corrupt_image", "no_images"])
def test_predict_bad_input_is_one_line_and_nonzero(project, tmp_path, damage):
    proj, _ = project
    imgs = tmp_path / "imgs"
    _write_pngs(imgs, 2)
    model = "models/export/black"
    if damage == "missing_dir":
        model = "models/export/nosuch"
    elif damage == "corrupt_image":
        (imgs / "img_1.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    else:
        shutil.rmtree(imgs)
        imgs.mkdir()
    proc = run_in(proj, sys.executable, "-m", "classprune.cli", "predict", "--model", model, "--images", str(imgs))
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error: ")
    assert {"missing_dir": "nosuch", "corrupt_image": "img_1.png", "no_images": "no images"}[damage] in proc.stderr


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _rename_key(path: Path) -> None:
    obj = torch.load(path, weights_only=True)
    obj["tensors"]["classifier.9.weight"] = obj["tensors"].pop("classifier.6.weight")
    torch.save(obj, path)


def _wrong_shape(path: Path) -> None:
    obj = torch.load(path, weights_only=True)
    obj["tensors"]["features.0.bias"]["shape"] = [32]
    torch.save(obj, path)


def _too_few_values(path: Path) -> None:
    obj = torch.load(path, weights_only=True)
    e = obj["tensors"]["features.3.weight"]
    e["values"] = e["values"][:-1]
    torch.save(obj, path)


def _flip_byte(path: Path) -> None:
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.file_size > 1000)
    data = bytearray(path.read_bytes())
    data[info.header_offset + 200] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _rename_key, _wrong_shape, _too_few_values, _flip_byte])
def test_damaged_sparse_file_is_refused_with_one_line(project, tmp_path, damage):
    proj, _ = project
    d = tmp_path / "black"
    shutil.copytree(proj / "models/export/black", d)
    damage(d / "sparse_fp32.pt")
    with pytest.raises(CheckpointError) as err:
        sp.load_sparse(d / "sparse_fp32.pt")
    msg = str(err.value)
    assert "\n" not in msg and str(d / "sparse_fp32.pt") in msg
    proc = run_in(proj, sys.executable, "-m", "classprune.cli", "predict", "--model", str(d), "--runtime", "torch",
                "--images", str(_write_pngs(tmp_path / "imgs", 1)[0]))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "sparse_fp32.pt" in proc.stderr


def test_failed_export_leaves_the_previous_export_untouched(project, tmp_path):
    proj, _ = project
    work = tmp_path / "p"
    shutil.copytree(proj / "models", work / "models")
    shutil.copytree(proj / "data", work / "data")
    shutil.copytree(proj / "reports", work / "reports")
    before = (work / "models/export/black/sparse_fp32.pt").read_bytes()
    sel = json.loads((work / "reports/selection.json").read_text())
    sel["green"] = dict(sel["black"], weights="models/green/round_7/weights.pt")  # does not exist
    (work / "reports/selection.json").write_text(json.dumps(sel))
    proc = run_in(work, sys.executable, str(ROOT / "stages/export.py"), "--params", str(proj / "params.yaml"))
    assert proc.returncode == 2 and "models/green/round_7/weights.pt" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert (work / "models/export/black/sparse_fp32.pt").read_bytes() == before
    assert not (work / "models/export/green").exists()
    assert not [p for p in (work / "models").iterdir() if p.name.endswith(".tmp")]


def test_threshold_outside_0_1_is_refused(tmp_path):
    weights, mask = _pruned_round(tmp_path / "r", 0.5)
    with pytest.raises(ex.ConfigError, match="threshold 2.5"):
        ex.export_model(tmp_path / "out", weights, mask, META, 2.5)
    assert not (tmp_path / "out").exists()


def test_artifacts_are_model_entries_for_every_scenario(project):
    from dvc.repo import Repo

    proj, _ = project
    with Repo(str(proj)) as repo:
        arts = {name: a for by_file in repo.artifacts.read().values() for name, a in by_file.items()}
        assert {n: (a.type, a.path) for n, a in arts.items()} == {
            s: ("model", f"models/export/{s}") for s in ("red", "blue", "black", "green")}
        assert all(repo.artifacts.get_path(s) == f"models/export/{s}" for s in arts)


def test_a_registered_artifact_version_resolves_to_a_loadable_model(project):
    """The model-registry flow: register a version (a GTO git tag), then resolve it with dvc.api."""
    import dvc.api
    import gto.api

    proj, _ = project
    gto.api.register(proj, "black", ref="HEAD", version="v1.0.0", author="test", author_email="test@example.com")
    art = dvc.api.artifacts_show("black", repo=str(proj))
    assert Path(art["path"]) == Path("models/export/black")
    assert art["rev"] == subprocess.run(["git", "rev-parse", "HEAD"], cwd=proj, capture_output=True,
                                        text=True).stdout.strip()
    sp.load_sparse(proj / art["path"] / "sparse_fp32.pt")
