"""Evaluation on one split at a time: AUC-ROC, accuracy, FNR, FPR and the confusion counts.

Positive class = label 1 (crack, melanoma). Splits are never pooled, and no augmentation is applied.
"""
from __future__ import annotations

import math
import sys
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..models.network import positive_score

METRIC_KEYS = ("auc", "accuracy", "fnr", "fpr")


@torch.no_grad()
def predict(model: nn.Module, loader: Iterable, desc: str = "eval") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, positive-class scores (log-odds) and argmax predictions, computed on the model's device."""
    model.eval()
    device = next(model.parameters()).device
    labels, scores, preds = [], [], []
    for x, y in tqdm(loader, desc=desc, disable=not sys.stderr.isatty(), leave=False):
        logits = model(x.to(device, non_blocking=True)).cpu()
        labels.append(y.cpu().numpy())
        scores.append(positive_score(logits).double().numpy())
        preds.append(logits.argmax(1).numpy())
    return np.concatenate(labels), np.concatenate(scores), np.concatenate(preds)


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


def binary_metrics(labels: np.ndarray, scores: np.ndarray, preds: np.ndarray) -> dict[str, float | int | None]:
    """AUC is None when the split holds one class only (undefined), as are rates with an empty denominator."""
    from sklearn.metrics import confusion_matrix, roc_auc_score

    labels = np.asarray(labels)
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(labels, preds, labels=[0, 1]).ravel())
    auc = float(roc_auc_score(labels, scores)) if len(np.unique(labels)) == 2 else None
    if auc is not None and math.isnan(auc):
        auc = None
    fnr, fpr = _rate(fn, fn + tp), _rate(fp, fp + tn)
    balanced = 1.0 - (fnr + fpr) / 2 if fnr is not None and fpr is not None else None
    return {
        "auc": auc, "accuracy": _rate(tp + tn, len(labels)), "fnr": fnr, "fpr": fpr, "balanced_accuracy": balanced,
        "tp": tp, "fp": fp, "tn": tn, "fn": fn, "n": int(len(labels)), "n_positive": tp + fn,
        # a constant predictor (everything one class) is a collapse, whatever its FNR or FPR
        "constant": bool(tp + fp == 0 or tn + fn == 0),
    }


def fnr_upper_bound(misses: int, positives: int, confidence: float) -> float | None:
    """One-sided exact (Clopper-Pearson) upper bound on the FNR after ``misses`` of ``positives``.

    What a split can promise: 0 misses in 90 positives bound the FNR at 3.3 % with 95 % confidence.
    """
    from scipy.stats import binomtest

    if positives <= 0:
        return None
    ci = binomtest(int(misses), int(positives), alternative="less").proportion_ci(confidence_level=confidence,
                                                                                   method="exact")
    return float(ci.high)


def allowed_misses(positives: int, target_fnr: float, confidence: float | None = None) -> int:
    """Positives a threshold may miss on this split: FNR <= target, or (with ``confidence``) its exact
    upper bound <= target. -1 when not even 0 misses meet the bound (too few positives)."""
    if confidence is None:
        return int(math.floor(target_fnr * positives + 1e-9))
    k = -1
    while k + 1 <= positives and fnr_upper_bound(k + 1, positives, confidence) <= target_fnr:
        k += 1
    return k


def operating_threshold(labels: np.ndarray, scores: np.ndarray, target_fnr: float,
                        confidence: float | None = None) -> float | None:
    """The highest threshold t whose FNR on these (validation) samples is <= target_fnr (predict t <= score);
    with ``confidence``, whose FNR upper bound is (the strictest, 0 misses, when none is).

    Chosen on val and applied unchanged to test. None without positives (undefined FNR).
    """
    pos = np.sort(np.asarray(scores, dtype=np.float64)[np.asarray(labels) == 1])
    if len(pos) == 0:
        return None
    missed = max(allowed_misses(len(pos), target_fnr, confidence), 0)  # positives allowed below the threshold
    return float(pos[min(missed, len(pos) - 1)])


def evaluate(model: nn.Module, loader: Iterable, desc: str = "eval") -> dict[str, float | int | None]:
    return binary_metrics(*predict(model, loader, desc))
