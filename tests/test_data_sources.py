import pandas as pd
import pytest
from PIL import Image

from classprune.data.sources import IMAGE_EXTENSIONS, index_crack, index_folder, index_isic, read_isic_csv
from classprune.errors import DataError


def _img(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (120, 120, 120)).save(path, format="PNG" if path.suffix.lower() == ".png" else "JPEG")
    return path


def test_extensions_constant():
    assert set(IMAGE_EXTENSIONS) == {".jpg", ".jpeg", ".png"}


def test_index_crack_any_extension_case(tmp_path):
    _img(tmp_path / "Positive" / "a.JPG")
    _img(tmp_path / "Positive" / "b.png")
    _img(tmp_path / "Negative" / "c.jpeg")
    (tmp_path / "Negative" / "notes.txt").write_text("x")
    df = index_crack(tmp_path)
    assert list(df.columns) == ["path", "label"]
    assert dict(zip(df["path"].map(lambda p: p.rsplit("/", 1)[1]), df["label"])) == {"a.JPG": 1, "b.png": 1, "c.jpeg": 0}


def test_index_crack_errors(tmp_path):
    with pytest.raises(DataError, match="not found: .*missing"):
        index_crack(tmp_path / "missing")
    _img(tmp_path / "Positive" / "a.jpg")
    with pytest.raises(DataError, match="Negative"):
        index_crack(tmp_path)
    (tmp_path / "Negative").mkdir()
    with pytest.raises(DataError, match=r"no images in .*Negative"):
        index_crack(tmp_path)


def test_index_folder(tmp_path):
    for cls in ("cat", "dog", "fox"):
        _img(tmp_path / cls / f"{cls}1.png")
    df = index_folder(tmp_path, "dog")
    assert df.set_index(df["path"].str.extract(r"(\w+)1\.png$")[0])["label"].to_dict() == {"cat": 0, "dog": 1, "fox": 0}
    with pytest.raises(DataError, match="available: cat, dog, fox"):
        index_folder(tmp_path, "cow")


@pytest.mark.parametrize(
    "text",
    [
        "ISIC_1,benign\nISIC_2,malignant\n",
        "ISIC_1,0.0\nISIC_2,1.0\n",
        "ISIC_1,0\nISIC_2,1\n",
        "image_id,melanoma\nISIC_1,0.0\nISIC_2,1.0\n",
        "image,label\nISIC_1, Benign\nISIC_2,MALIGNANT\n",
    ],
)
def test_isic_csv_labels(tmp_path, text):
    csv = tmp_path / "gt.csv"
    csv.write_text(text)
    assert read_isic_csv(csv).to_dict("list") == {"id": ["ISIC_1", "ISIC_2"], "label": [0, 1]}


def _isic(tmp_path):
    _img(tmp_path / "train" / "ISIC_1.jpg")
    _img(tmp_path / "train" / "ISIC_2.JPG")
    _img(tmp_path / "test" / "ISIC_3.png")
    (tmp_path / "train.csv").write_text("ISIC_1,benign\nISIC_2,malignant\n")
    (tmp_path / "test.csv").write_text("ISIC_3,1.0\n")
    return tmp_path / "train", tmp_path / "train.csv", tmp_path / "test", tmp_path / "test.csv"


def test_index_isic(tmp_path):
    df = index_isic(*_isic(tmp_path))
    assert list(df.columns) == ["path", "label", "subset"]
    assert df["label"].tolist() == [0, 1, 1]
    assert df["subset"].tolist() == ["train", "train", "test"]
    assert df["path"].iloc[1].endswith("ISIC_2.JPG")


def test_isic_errors(tmp_path):
    train_dir, train_csv, test_dir, test_csv = _isic(tmp_path)
    with pytest.raises(DataError, match="CSV not found: .*nope.csv"):
        index_isic(train_dir, tmp_path / "nope.csv", test_dir, test_csv)
    test_csv.write_text("ISIC_3,1.0\nISIC_9,0.0\n")
    with pytest.raises(DataError, match=r"image ISIC_9 listed in .* not found in .*test"):
        index_isic(train_dir, train_csv, test_dir, test_csv)
    train_csv.write_text("ISIC_1,benign\nISIC_2,maybe\n")
    with pytest.raises(DataError, match=r"line 2: bad label 'maybe' for ISIC_2"):
        index_isic(train_dir, train_csv, test_dir, test_csv)
    train_csv.write_text("ISIC_1,benign\n")
    with pytest.raises(DataError, match="folder not found: .*none"):
        index_isic(tmp_path / "none", train_csv, test_dir, test_csv)
