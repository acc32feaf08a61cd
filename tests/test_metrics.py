import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, roc_auc_score

from classprune.evaluation.metrics import binary_metrics


def test_metrics_agree_with_sklearn_on_random_data():
    rng = np.random.default_rng(0)
    labels = (rng.random(500) < 0.2).astype(int)
    scores = rng.normal(size=500) + labels
    preds = (scores > 0.5).astype(int)
    m = binary_metrics(labels, scores, preds)
    tn, fp, fn, tp = confusion_matrix(labels, preds).ravel()
    assert m["auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert m["fnr"] == pytest.approx(fn / (fn + tp))
    assert m["fpr"] == pytest.approx(fp / (fp + tn))
    assert m["accuracy"] == pytest.approx((tp + tn) / 500)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (tp, fp, tn, fn)


def test_single_class_split_gives_undefined_auc_not_a_crash():
    m = binary_metrics(np.zeros(5, int), np.arange(5.0), np.zeros(5, int))
    assert m["auc"] is None and m["fnr"] is None and m["fpr"] == 0.0
