"""Index builders: turn a dataset on disk into a (path, label[, subset]) table, failing early and clearly.

Everything downstream (splitting, caching) works on these tables only, so a bad dataset is reported here,
naming the folder, file or CSV row to fix.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ..errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
_POSITIVE_LABELS = {"malignant", "1", "1.0"}
_NEGATIVE_LABELS = {"benign", "0", "0.0"}


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in ``folder``, sorted so the index never depends on filesystem order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    return sorted(
        p for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    )


def index_crack(root: str | os.PathLike) -> pd.DataFrame:
    """CRACK layout: ``root/Positive`` (label 1, crack) and ``root/Negative`` (label 0)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"CRACK dataset folder not found: {root} (expected Positive/ and Negative/ inside)")
    frames = []
    for name, label in (("Negative", 0), ("Positive", 1)):
        folder = root / name
        if not folder.is_dir():
            raise DataError(f"missing class folder {folder} (a CRACK dataset has Positive/ and Negative/ folders)")
        frames.append(_class_frame(folder, label))
    return pd.concat(frames, ignore_index=True)


def index_folder(root: str | os.PathLike, positive_class: str) -> pd.DataFrame:
    """One sub-folder per class; ``positive_class`` is label 1, every other class label 0."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root} (expected one sub-folder per class)")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"{root} needs at least two class sub-folders, found {len(classes)}: {', '.join(classes)}")
    if positive_class not in classes:
        raise DataError(f"positive class {positive_class!r} not found in {root}; available: {', '.join(classes)}")
    frames = [_class_frame(root / name, int(name == positive_class)) for name in classes]
    return pd.concat(frames, ignore_index=True)


def index_isic(
    train_images: str | os.PathLike,
    train_csv: str | os.PathLike,
    test_images: str | os.PathLike,
    test_csv: str | os.PathLike,
) -> pd.DataFrame:
    """ISIC-2016: the official train and test sets, each an image folder plus a ground-truth CSV."""
    frames = []
    for subset, images, csv in (("train", train_images, train_csv), ("test", test_images, test_csv)):
        labels = read_isic_csv(csv)
        by_id = _images_by_id(Path(images))
        missing = [i for i in labels["id"] if i not in by_id]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DataError(f"image {missing[0]} listed in {csv} not found in {images}{more}")
        frames.append(pd.DataFrame({
            "path": [by_id[i] for i in labels["id"]],
            "label": labels["label"].to_numpy(),
            "subset": subset,
        }))
    index = pd.concat(frames, ignore_index=True)
    dup = index["path"].duplicated(keep=False)
    if dup.any():
        raise DataError(f"image {index.loc[dup, 'path'].iloc[0]} is listed twice in the ISIC train/test CSVs")
    return index


def read_isic_csv(csv: str | os.PathLike) -> pd.DataFrame:
    """Parse an ISIC ground-truth CSV (id, label), with or without a header row, into (id, label 0/1)."""
    csv = Path(csv)
    if not csv.is_file():
        raise DataError(f"ISIC ground-truth CSV not found: {csv}")
    try:
        table = pd.read_csv(csv, header=None, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read ISIC CSV {csv}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
    if table.shape[1] < 2:
        raise DataError(f"ISIC CSV {csv} needs two columns (image id, label), found {table.shape[1]}")
    ids = table.iloc[:, 0].str.strip().str.replace(r"\.(jpe?g|png)$", "", case=False, regex=True)
    raw = table.iloc[:, 1].str.strip().str.lower()
    if len(raw) and _parse_label(raw.iloc[0]) is None:
        ids, raw = ids.iloc[1:], raw.iloc[1:]  # a header row: only the first row may lack a valid label
    if ids.empty:
        raise DataError(f"ISIC CSV {csv} has no rows")
    labels = raw.map(_parse_label)
    bad = labels.isna()
    if bad.any():
        row = bad.to_numpy().argmax()
        line = ids.index[row] + 1
        raise DataError(
            f"{csv} line {line}: bad label {table.iloc[ids.index[row], 1]!r} for {ids.iloc[row]} "
            "(expected benign/malignant or 0/1)"
        )
    if ids.duplicated().any():
        raise DataError(f"{csv}: image id {ids[ids.duplicated()].iloc[0]} is listed twice")
    return pd.DataFrame({"id": ids.to_numpy(), "label": labels.astype("int64").to_numpy()})


def _parse_label(value: str) -> int | None:
    if value in _POSITIVE_LABELS:
        return 1
    if value in _NEGATIVE_LABELS:
        return 0
    return None


def _images_by_id(folder: Path) -> dict[str, str]:
    """Map image id (file stem) to path; .jpg wins over .jpeg and .png when an id has several files."""
    if not folder.is_dir():
        raise DataError(f"ISIC image folder not found: {folder}")
    rank = {ext: i for i, ext in enumerate(IMAGE_EXTENSIONS)}
    by_id: dict[str, str] = {}
    for path in sorted(list_images(folder), key=lambda p: (p.stem, rank[p.suffix.lower()]), reverse=True):
        by_id[path.stem] = str(path)
    return by_id


def _class_frame(folder: Path, label: int) -> pd.DataFrame:
    paths = list_images(folder)
    if not paths:
        raise DataError(f"no images in {folder} (expected {'/'.join(IMAGE_EXTENSIONS)} files)")
    return pd.DataFrame({"path": [str(p) for p in paths], "label": label})
