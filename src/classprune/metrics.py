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

from .model import positive_score

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
    return {
        "auc": auc, "accuracy": _rate(tp + tn, len(labels)), "fnr": _rate(fn, fn + tp), "fpr": _rate(fp, fp + tn),
        "tp": tp, "fp": fp, "tn": tn, "fn": fn, "n": int(len(labels)), "n_positive": tp + fn,
    }


def evaluate(model: nn.Module, loader: Iterable, desc: str = "eval") -> dict[str, float | int | None]:
    return binary_metrics(*predict(model, loader, desc))
