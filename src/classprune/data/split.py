"""Seeded, stratified train/val/test splits, written as a manifest CSV that every later stage reads.

Splits are computed from a path-sorted index so they depend only on the files and the seed, never on the
order a filesystem lists them in.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ..errors import DataError
from ..io import atomic_path

SPLITS = ("train", "val", "test")
CLASS_NAMES = {0: "negative", 1: "positive"}
MANIFEST_COLUMNS = ["path", "label", "split"]


def imbalanced_split(
    index: pd.DataFrame,
    n_negative: int = 20000,
    n_positive: int = 4000,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    take_all: bool = False,
) -> pd.DataFrame:
    """Draw a fixed number of images per class (the paper's 20k/4k imbalance), then split 70/15/15.

    Rows whose ``eval_only`` column is true are never drawn: after the split they are divided between val and
    test (stratified, in the ratio of their fractions), so the train split is the one without them."""
    fractions = _check_fractions(fractions)
    index = _sorted_index(index)
    held = index.pop("eval_only").astype(bool) if "eval_only" in index.columns else pd.Series(False, index=index.index)
    eval_only, index = index[held].reset_index(drop=True), index[~held].reset_index(drop=True)
    drawn = []
    for label, wanted in ((0, n_negative), (1, n_positive)):
        pool = index[index["label"] == label]
        if wanted > len(pool):
            if not take_all:
                raise DataError(
                    f"asked for {wanted} {CLASS_NAMES[label]} images but {_root_of(pool)} has {len(pool)}; "
                    f"lower data.n_{CLASS_NAMES[label]} or set data.take_all: true"
                )
            wanted = len(pool)
        drawn.append(pool.sample(n=int(wanted), random_state=seed))
    pool = pd.concat(drawn)
    train_frac, val_frac, test_frac = fractions
    train, rest = _stratified(pool, train_frac, seed)
    val, test = _stratified(rest, val_frac / (val_frac + test_frac), seed)
    if len(eval_only):
        extra_val, extra_test = _stratified(eval_only, val_frac / (val_frac + test_frac), seed)
        val, test = pd.concat([val, extra_val]), pd.concat([test, extra_test])
    return _assemble({"train": train, "val": val, "test": test})


def isic_split(index: pd.DataFrame, val_fraction: float = 0.15, seed: int = 0) -> pd.DataFrame:
    """Keep ISIC's official train/test; carve a stratified validation set out of train."""
    if "subset" not in index.columns:
        raise DataError("ISIC index has no 'subset' column; build it with index_isic")
    if not 0 < val_fraction < 1:
        raise DataError(f"data.val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    index = _sorted_index(index)
    train, val = _stratified(index[index["subset"] == "train"], 1 - val_fraction, seed)
    return _assemble({"train": train, "val": val, "test": index[index["subset"] == "test"]})


def write_manifest(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write the manifest CSV atomically, so a killed stage never leaves a half-written split."""
    df = validate_manifest(df, source="manifest")
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, lineterminator="\n")


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read a manifest CSV and check it is one the split stage could have written."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"split manifest not found: {path}; run the split stage first (dvc repro split)")
    try:
        df = pd.read_csv(path, dtype={"path": str, "split": str}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read split manifest {path}: {str(exc).splitlines()[0]}") from None
    return validate_manifest(df, source=str(path))


def validate_manifest(df: pd.DataFrame, source: str = "manifest") -> pd.DataFrame:
    """Columns path,label,split; labels 0/1; known split names; no image in two splits."""
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{source} lacks column(s) {', '.join(missing)}; expected {','.join(MANIFEST_COLUMNS)}")
    df = df[MANIFEST_COLUMNS].copy()
    labels = pd.to_numeric(df["label"], errors="coerce")
    if not labels.isin([0, 1]).all():
        raise DataError(f"{source}: labels must be 0 or 1, found {df.loc[~labels.isin([0, 1]), 'label'].iloc[0]!r}")
    df["label"] = labels.astype("int64")
    df["path"] = df["path"].astype(str)
    unknown = ~df["split"].isin(SPLITS)
    if unknown.any():
        raise DataError(f"{source}: unknown split {df.loc[unknown, 'split'].iloc[0]!r}; expected one of {', '.join(SPLITS)}")
    dup = df["path"].duplicated(keep=False)
    if dup.any():
        raise DataError(f"{source}: image {df.loc[dup, 'path'].iloc[0]} appears more than once")
    return df.reset_index(drop=True)


def _check_fractions(fractions) -> tuple[float, float, float]:
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
        raise DataError(f"data.fractions must be three positive numbers (train, val, test) summing to 1, got {list(fractions)}")
    return fractions


def _sorted_index(index: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ("path", "label") if c not in index.columns]
    if missing:
        raise DataError(f"image index lacks column(s) {', '.join(missing)}")
    dup = index["path"].duplicated()
    if dup.any():
        raise DataError(f"image {index.loc[dup, 'path'].iloc[0]} appears more than once in the index")
    return index.sort_values("path", kind="stable").reset_index(drop=True)


def _stratified(df: pd.DataFrame, first_fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    from sklearn.model_selection import train_test_split  # heavy: only the split stage needs it

    try:
        return train_test_split(df, train_size=first_fraction, stratify=df["label"], random_state=seed)
    except ValueError as exc:
        counts = df["label"].value_counts().to_dict()
        raise DataError(
            f"too few images for a stratified split (class counts {counts}): {str(exc).splitlines()[0]}"
        ) from None


def _assemble(parts: dict[str, pd.DataFrame]) -> pd.DataFrame:
    frames = [part[["path", "label"]].sort_values("path").assign(split=name) for name, part in parts.items()]
    out = pd.concat(frames, ignore_index=True)
    out["label"] = out["label"].astype("int64")
    return validate_manifest(out, source="split")


def _root_of(pool: pd.DataFrame) -> str:
    """The folder the images of one class live in, for error messages."""
    if pool.empty:
        return "the dataset"
    return os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in pool["path"]])
