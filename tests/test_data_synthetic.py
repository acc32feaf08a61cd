import numpy as np
import pytest
from PIL import Image

from classprune.data import synthetic
from classprune.data.sources import index_crack
from classprune.errors import DataError


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


def test_positives_are_darker_lines(tmp_path):
    """Cracks add dark pixels well below the local texture; distractors are fainter."""
    def dark_fraction(label):
        imgs = np.stack([synthetic.render(64, 0, label, i) for i in range(60)]).mean(-1)
        median = np.median(imgs, axis=(1, 2), keepdims=True)
        return (imgs < median - 40).mean()

    assert dark_fraction(1) > 3 * dark_fraction(0)


def test_bad_arguments(tmp_path):
    with pytest.raises(DataError, match="format"):
        synthetic.generate(tmp_path / "x", 1, 1, fmt="bmp")
    with pytest.raises(DataError):
        synthetic.generate(tmp_path / "x", -1, 1)
    assert not (tmp_path / "x").exists()


def test_jpeg(tmp_path):
    df = synthetic.generate(tmp_path / "j", 1, 1, image_size=32, fmt="jpg")
    assert all(p.endswith(".jpg") for p in df["path"])
