from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from classprune.data import synthetic
from classprune.data.sources import index_crack
from classprune.data.split import imbalanced_split
from classprune.errors import DataError

ROOT = Path(__file__).resolve().parents[1]


def _bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_layout_and_index(tmp_path):
    df = synthetic.generate(tmp_path / "crack", n_positive=3, n_negative=5, image_size=32, seed=1)
    assert sorted(df["label"]) == [0] * 5 + [1] * 3
    assert len(list((tmp_path / "crack" / "Positive").glob("*.png"))) == 3
    assert len(list((tmp_path / "crack" / "Negative").glob("*.png"))) == 5
    with Image.open(df["path"].iloc[0]) as im:
        assert im.size == (32, 32) and im.mode == "RGB"
    assert index_crack(tmp_path / "crack").sort_values("path").reset_index(drop=True).equals(
        df.sort_values("path").reset_index(drop=True)
    )
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir left


def test_deterministic_and_independent_of_counts(tmp_path):
    synthetic.generate(tmp_path / "a", 4, 4, image_size=32, seed=7)
    synthetic.generate(tmp_path / "b", 4, 4, image_size=32, seed=7)
    synthetic.generate(tmp_path / "c", 4, 4, image_size=32, seed=8)
    synthetic.generate(tmp_path / "d", 2, 6, image_size=32, seed=7)
    a, b, c, d = (_bytes(tmp_path / x) for x in "abcd")
    assert a == b
    assert all(a[k] != c[k] for k in a)
    assert all(d[k] == a[k] for k in d if k in a)  # image i of a class does not depend on the counts


def _default_test_split():
    """The test split the default params.yaml draws from the generator, rendered in memory."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    d, syn = raw["data"], raw["data"]["synthetic"]
    rows = [(f"x/{synthetic.CLASS_DIRS[label]}/{i:05d}.png", label)
            for label, n in ((0, syn["n_negative"]), (1, syn["n_positive"])) for i in range(n)]
    manifest = imbalanced_split(pd.DataFrame(rows, columns=["path", "label"]), d["n_negative"], d["n_positive"],
                                tuple(d["fractions"]), d["split_seed"], d["take_all"])
    test = manifest[manifest["split"] == "test"]
    images = np.stack([synthetic.render(syn["image_size"], syn["seed"], int(label), int(Path(path).stem))
                       for path, label in zip(test["path"], test["label"])])
    return images, test["label"].to_numpy()


def test_darkness_is_no_shortcut():
    """Cracks and distractors share one darkness range: the darkest pixel ranks the test split poorly."""
    images, labels = _default_test_split()
    assert labels.sum() >= 50
    assert synthetic.darkest_pixel_auc(images, labels) <= 0.75
    # ... though it finds darkness where darkness does separate the classes
    toy = np.full((4, 8, 8, 3), 200, np.uint8)
    toy[2:, 3, 3] = 10
    assert synthetic.darkest_pixel_auc(toy, np.array([0, 0, 1, 1])) == 1.0


def test_darkest_pixel_auc_bad_input():
    with pytest.raises(ValueError, match="both classes"):
        synthetic.darkest_pixel_auc(np.zeros((3, 8, 8)), np.zeros(3))
    with pytest.raises(ValueError, match="labels"):
        synthetic.darkest_pixel_auc(np.zeros((3, 8, 8)), np.array([0, 1]))


def test_source_task_is_balanced_deterministic_and_not_the_target():
    a_img, a_lab = synthetic.source_set(3, image_size=64, seed=0)
    b_img, b_lab = synthetic.source_set(3, image_size=64, seed=0)
    c_img, _ = synthetic.source_set(3, image_size=64, seed=1)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    assert np.bincount(a_lab).tolist() == [3] * len(synthetic.SOURCE_CLASSES)
    assert a_img.shape == (24, 64, 64, 3) and a_img.dtype == np.uint8
    assert not np.array_equal(a_img, c_img)
    assert not any(np.array_equal(a_img[i], synthetic.render(64, 0, label, i)) for i in range(8) for label in (0, 1))
    with pytest.raises(DataError):
        synthetic.source_set(0)


def test_bad_arguments(tmp_path):
    with pytest.raises(DataError, match="format"):
        synthetic.generate(tmp_path / "x", 1, 1, fmt="bmp")
    with pytest.raises(DataError):
        synthetic.generate(tmp_path / "x", -1, 1)
    assert not (tmp_path / "x").exists()


def test_jpeg(tmp_path):
    df = synthetic.generate(tmp_path / "j", 1, 1, image_size=32, fmt="jpg")
    assert all(p.endswith(".jpg") for p in df["path"])
