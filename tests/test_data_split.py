import pandas as pd
import pytest

from classprune.data.split import imbalanced_split, isic_split, read_manifest, write_manifest
from classprune.errors import DataError


def _index(n_neg, n_pos, root="/data/crack"):
    rows = [(f"{root}/Negative/{i:05d}.jpg", 0) for i in range(n_neg)]
    rows += [(f"{root}/Positive/{i:05d}.jpg", 1) for i in range(n_pos)]
    return pd.DataFrame(rows, columns=["path", "label"])


def test_sizes_ratios_stratification_disjoint():
    m = imbalanced_split(_index(3000, 900), n_negative=2000, n_positive=400, seed=3)
    counts = m.groupby(["split", "label"]).size().unstack()
    assert counts.loc["train"].tolist() == [1400, 280]
    assert counts.loc["val"].tolist() == [300, 60]
    assert counts.loc["test"].tolist() == [300, 60]
    assert m["path"].is_unique
    assert set(m["split"]) == {"train", "val", "test"}


def test_deterministic_and_order_independent():
    index = _index(500, 100)
    a = imbalanced_split(index, 200, 50, seed=1)
    b = imbalanced_split(index.sample(frac=1, random_state=5), 200, 50, seed=1)
    c = imbalanced_split(index, 200, 50, seed=2)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def test_not_enough_images_and_take_all():
    index = _index(300, 120)
    with pytest.raises(DataError) as err:
        imbalanced_split(index, n_negative=200, n_positive=4000)
    msg = str(err.value)
    assert msg == ("asked for 4000 positive images but /data/crack/Positive has 120; "
                   "lower data.n_positive or set data.take_all: true")
    m = imbalanced_split(index, n_negative=200, n_positive=4000, take_all=True)
    assert (m["label"] == 1).sum() == 120 and (m["label"] == 0).sum() == 200


@pytest.mark.parametrize("fractions", [(0.7, 0.2, 0.2), (0.5, 0.5), (1.0, 0.0, 0.0)])
def test_bad_fractions(fractions):
    with pytest.raises(DataError, match="fractions"):
        imbalanced_split(_index(100, 100), 50, 50, fractions=fractions)


def test_too_few_for_stratification():
    with pytest.raises(DataError, match="too few images"):
        imbalanced_split(_index(10, 2), 10, 2)


def test_isic_split():
    index = pd.concat([
        _index(80, 20, "/isic/train").assign(subset="train"),
        _index(30, 10, "/isic/test").assign(subset="test"),
    ], ignore_index=True)
    m = isic_split(index, val_fraction=0.2, seed=0)
    counts = m.groupby(["split", "label"]).size().unstack()
    assert counts.loc["val"].tolist() == [16, 4]
    assert counts.loc["train"].tolist() == [64, 16]
    assert counts.loc["test"].tolist() == [30, 10]
    assert m["path"].is_unique
    assert m.loc[m["split"] == "test", "path"].str.startswith("/isic/test").all()


def test_manifest_round_trip(tmp_path):
    m = imbalanced_split(_index(100, 40), 100, 40)
    write_manifest(m, tmp_path / "splits" / "manifest.csv")
    pd.testing.assert_frame_equal(read_manifest(tmp_path / "splits" / "manifest.csv"), m)
    assert [p.name for p in (tmp_path / "splits").iterdir()] == ["manifest.csv"]


def test_manifest_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_manifest(tmp_path / "none.csv")
    (tmp_path / "bad.csv").write_text("path,label\na.jpg,0\n")
    with pytest.raises(DataError, match="lacks column.*split"):
        read_manifest(tmp_path / "bad.csv")
    (tmp_path / "dup.csv").write_text("path,label,split\na.jpg,0,train\na.jpg,0,test\n")
    with pytest.raises(DataError, match="a.jpg appears more than once"):
        read_manifest(tmp_path / "dup.csv")


def test_eval_only_images_go_to_val_and_test_and_leave_train_as_it_was():
    """data.synthetic.eval_only: images rendered past the counts enlarge val and test; train is the same."""
    base = imbalanced_split(_index(300, 60), n_negative=300, n_positive=60, seed=4)
    index = _index(450, 90)
    number = index["path"].str.extract(r"(\d+)\.jpg$")[0].astype(int)
    index["eval_only"] = number >= index["label"].map({0: 300, 1: 60})
    m = imbalanced_split(index, n_negative=300, n_positive=60, seed=4)
    train = lambda df: df[df["split"] == "train"].reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(train(m), train(base))
    counts = m.groupby(["split", "label"]).size().unstack() - base.groupby(["split", "label"]).size().unstack()
    assert counts.loc["val"].tolist() == [75, 15] and counts.loc["test"].tolist() == [75, 15]
    for split in ("val", "test"):  # the base split's images stay where they were
        assert set(base.loc[base["split"] == split, "path"]) <= set(m.loc[m["split"] == split, "path"])
    assert m["path"].is_unique and "eval_only" not in m.columns
