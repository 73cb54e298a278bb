"""Image-level metrics: threshold-free (AUROC, AUPRC) and at a decision threshold (F1, confusion matrix).

All results are plain Python numbers (or None), ready for json.dump.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

from defectmine.errors import ConfigError
from defectmine.evaluation._validate import labels_and_scores, threshold_value


class UndefinedMetricWarning(UserWarning):
    """A metric cannot be computed on this data (e.g. AUROC with one class) and is reported as None."""


def image_metrics(labels: Any, scores: Any, threshold: float) -> dict:
    """Image-level detection metrics.

    Args:
        labels: 0 (normal) / 1 (anomalous) per image.
        scores: anomaly score per image (higher = more anomalous).
        threshold: predict anomalous when `score >= threshold`; a number or a `Threshold`.

    Returns:
        {"auroc", "auprc", "f1", "precision", "recall", "accuracy",
         "confusion_matrix": {"tn", "fp", "fn", "tp"}, "n", "n_anomalous", "threshold"}.
        auprc is average precision. auroc and auprc are None (with an UndefinedMetricWarning) when
        all labels are equal. precision, recall and F1 are 0 where their denominator is 0.

    Raises:
        ConfigError: labels and scores of different lengths or not 1-D, labels other than 0/1, or
            NaN/infinite scores.
    """
    y, s = labels_and_scores(labels, scores)
    t = threshold_value(threshold)
    pred = s >= t

    auroc = auprc = None
    if y.all() or not y.any():
        kind = "anomalous" if y.all() else "normal"
        warnings.warn(
            f"All {y.size} images are {kind}: AUROC and AUPRC need both normal and anomalous images, "
            "so they are reported as None. Evaluate on a split that contains both.",
            UndefinedMetricWarning,
            stacklevel=2,
        )
    else:
        auroc = float(roc_auc_score(y, s))
        auprc = float(average_precision_score(y, s))

    precision, recall, f1, _ = precision_recall_fscore_support(
        y, pred, average="binary", pos_label=True, zero_division=0
    )
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[False, True]).ravel()
    return {
        "auroc": auroc,
        "auprc": auprc,
        "f1": float(f1),
        "precision": float(precision),
        "recall": float(recall),
        "accuracy": float(accuracy_score(y, pred)),
        "confusion_matrix": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
        "n": int(y.size),
        "n_anomalous": int(y.sum()),
        "threshold": t,
    }


def _require_both_classes(y: np.ndarray, what: str) -> None:
    if y.all() or not y.any():
        raise ConfigError(
            f"{what} needs both normal and anomalous images, but all {y.size} labels are "
            f"{int(y[0])}. Check image_metrics(...)['auroc'] is not None before plotting."
        )


def roc_points(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve for plotting: (fpr, tpr, thresholds), as sklearn.metrics.roc_curve.

    Raises:
        ConfigError: if only one class is present (the curve is undefined).
    """
    y, s = labels_and_scores(labels, scores)
    _require_both_classes(y, "A ROC curve")
    fpr, tpr, thresholds = roc_curve(y, s)
    return fpr, tpr, thresholds


def pr_points(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision-recall curve for plotting: (precision, recall, thresholds), as
    sklearn.metrics.precision_recall_curve (precision and recall have one more entry than thresholds).

    Raises:
        ConfigError: if only one class is present.
    """
    y, s = labels_and_scores(labels, scores)
    _require_both_classes(y, "A precision-recall curve")
    precision, recall, thresholds = precision_recall_curve(y, s)
    return precision, recall, thresholds


__all__ = ["UndefinedMetricWarning", "image_metrics", "pr_points", "roc_points"]
