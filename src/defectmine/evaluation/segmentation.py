"""Segmentation metrics of class-index maps, and the threshold and model-selection values on val only.

Predictions and ground truth are class-index maps (N, H, W): 0 is the background, c >= 1 a defect
class (`ClassMaps.class_index(threshold)` gives the prediction). For each defect class c, over all
pixels of the set:

    TP_c = pred == c and true == c,   FP_c = pred == c and true != c,   FN_c = pred != c and true == c

- per-class IoU_c = TP_c / (TP_c + FP_c + FN_c), Dice_c = 2 TP_c / (2 TP_c + FP_c + FN_c); a class that
  is neither present nor predicted has no value (NaN) and is left out of the means;
- mean_iou, mean_dice: their mean over the defect classes (each class counts once, however rare);
- pooled_iou: the DLI paper's equation 8, sum_c TP_c / sum_c (TP_c + FP_c + FN_c) - every defect pixel
  of the set counts once, so large classes dominate; defective_pooled_iou: the same over the images
  whose ground truth holds a defect pixel (false alarms on defect-free images left out).

Images whose ground truth is unknown (anomalous images without a mask, `ImageDataset.mask_available`)
are left out through `available`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from defectmine.core.results import ClassMaps
from defectmine.errors import ConfigError
from defectmine.evaluation._validate import to_numpy
from defectmine.evaluation.selection import check_val_only

SEGMENTATION_METRICS = ("mean_iou", "mean_dice", "pooled_iou", "defective_pooled_iou")
# The DLI paper's fixed threshold on the per-class sigmoids.
DEFAULT_THRESHOLD = 0.5
# Candidates of the val-chosen threshold: 0.05, 0.10, ..., 0.95 (0.5 among them).
THRESHOLD_CANDIDATES = tuple(round(0.05 * i, 2) for i in range(1, 20))

__all__ = [
    "DEFAULT_THRESHOLD", "SEGMENTATION_METRICS", "SegmentationThreshold", "THRESHOLD_CANDIDATES",
    "class_counts", "segmentation_metrics", "segmentation_threshold_on_val", "segmentation_value",
    "segmentation_value_on_val",
]


def _class_maps(x: Any, name: str) -> np.ndarray:
    arr = to_numpy(x, name)
    if arr.ndim != 3 or not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise ConfigError(f"{name} must be integer class-index maps (N, H, W); got {arr.dtype} {arr.shape}.")
    return arr.astype(np.int64, copy=False)


def _selected(pred: Any, target: Any, n_classes: int, available: Any) -> tuple[np.ndarray, np.ndarray]:
    p, t = _class_maps(pred, "predictions"), _class_maps(target, "ground truth")
    if p.shape != t.shape:
        raise ConfigError(f"predictions {p.shape} and ground truth {t.shape} must have the same shape (N, H, W).")
    for name, arr in (("predictions", p), ("ground truth", t)):
        if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
            raise ConfigError(
                f"{name} hold class indices {arr.min()}..{arr.max()}, outside 0..{n_classes - 1} of the "
                f"{n_classes} classes. Fix: pass maps indexed like the class list (background = 0)."
            )
    if available is not None:
        keep = np.asarray(available, dtype=bool).reshape(-1)
        if keep.shape != (len(t),):
            raise ConfigError(f"available has {keep.size} entries for {len(t)} images; pass one bool per image.")
        p, t = p[keep], t[keep]
    return p, t


def class_counts(pred: Any, target: Any, n_classes: int, *, available: Any = None) -> np.ndarray:
    """(n_classes - 1, 3) int64: TP, FP, FN of each defect class 1..n_classes-1 over all pixels.

    n_classes counts the background (the length of a dataset's `classes`).
    """
    p, t = _selected(pred, target, n_classes, available)
    confusion = np.bincount((t * n_classes + p).reshape(-1), minlength=n_classes * n_classes)
    confusion = confusion.reshape(n_classes, n_classes)  # rows: truth, columns: prediction
    tp = np.diag(confusion)
    fp = confusion.sum(axis=0) - tp
    fn = confusion.sum(axis=1) - tp
    return np.stack([tp, fp, fn], axis=1)[1:].astype(np.int64)


def _ratios(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tp, fp, fn = counts[:, 0].astype(float), counts[:, 1].astype(float), counts[:, 2].astype(float)
    seen = tp + fp + fn > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(seen, tp / (tp + fp + fn), np.nan)
        dice = np.where(seen, 2 * tp / (2 * tp + fp + fn), np.nan)
    return iou, dice


def _mean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def _pooled(counts: np.ndarray) -> float:
    total = counts.sum()
    return float(counts[:, 0].sum() / total) if total else float("nan")


def segmentation_metrics(pred: Any, target: Any, classes: Sequence[str], *, available: Any = None) -> dict:
    """IoU and Dice per class, their means, and the pooled IoU (module docstring); JSON-ready.

    Args:
        pred, target: (N, H, W) class-index maps (0 = background).
        classes: the class names, background first (a dataset's or ClassMaps' `classes`).
        available: bool (N,), the images whose ground truth is known; None: all.
    Returns:
        {"per_class": {name: {"iou", "dice", "pixels" (ground-truth pixels)}}, "mean_iou", "mean_dice",
        "pooled_iou", "defective_pooled_iou", "images"}; undefined values are NaN.
    """
    n_classes = len(classes)
    p, t = _selected(pred, target, n_classes, available)
    counts = class_counts(p, t, n_classes)
    iou, dice = _ratios(counts)
    defective = t.reshape(len(t), -1).any(axis=1)
    per_class = {
        name: {"iou": float(iou[i]), "dice": float(dice[i]), "pixels": int(counts[i, 0] + counts[i, 2])}
        for i, name in enumerate(classes[1:])
    }
    return {
        "per_class": per_class,
        "mean_iou": _mean(iou),
        "mean_dice": _mean(dice),
        "pooled_iou": _pooled(counts),
        "defective_pooled_iou": _pooled(class_counts(p[defective], t[defective], n_classes)),
        "images": int(len(t)),
    }


def segmentation_value(metric: str, pred: Any, target: Any, n_classes: int, *, available: Any = None) -> float:
    """One metric of SEGMENTATION_METRICS (NaN when undefined, e.g. no defect present or predicted)."""
    if metric not in SEGMENTATION_METRICS:
        raise ConfigError(f"unknown segmentation metric {metric!r}. Fix: use one of {', '.join(SEGMENTATION_METRICS)}.")
    names = ("background", *(f"class {i}" for i in range(1, n_classes)))
    return segmentation_metrics(pred, target, names, available=available)[metric]


@dataclass(frozen=True)
class SegmentationThreshold:
    """The val-chosen threshold of per-class maps, measured against the paper's 0.5.

    threshold: the candidate with the best `metric` on val (ties go to the one nearest 0.5).
    value: the metric there; default_value: the metric at DEFAULT_THRESHOLD (0.5).
    """

    metric: str
    threshold: float
    value: float
    default_value: float


def _check_val_maps(maps: ClassMaps, val: Any) -> None:
    check_val_only(val, "the segmentation threshold and model selection")
    if not isinstance(maps, ClassMaps):
        raise ConfigError(f"expected ClassMaps (a segmenter's predict output), got {type(maps).__name__}.")
    if len(maps) != len(val) or tuple(maps.classes) != tuple(val.classes):
        raise ConfigError(
            f"{len(maps)} maps of classes {maps.classes} do not belong to the {len(val)} val images of classes "
            f"{tuple(val.classes)}. Fix: predict the val set with a segmenter trained on the same classes."
        )


def segmentation_value_on_val(metric: str, maps: ClassMaps, val: Any, threshold: float = DEFAULT_THRESHOLD) -> float:
    """`metric` of ``maps.class_index(threshold)`` on the val set `val` (an ImageDataset of split "val"):
    the model-selection value. Images without known ground truth are left out."""
    _check_val_maps(maps, val)
    return segmentation_value(
        metric, maps.class_index(threshold, how="max"), val.class_masks(), len(maps.classes),
        available=val.mask_available,
    )


def segmentation_threshold_on_val(
    maps: ClassMaps, val: Any, *, metric: str = "mean_iou", candidates: Sequence[float] = THRESHOLD_CANDIDATES
) -> SegmentationThreshold:
    """The threshold on ``maps.anomaly_map("max")`` that maximises `metric` on the val set `val`.

    A pixel is a defect when its most probable defect class reaches the threshold
    (`ClassMaps.class_index`). Refuses any image not from the "val" split.
    """
    _check_val_maps(maps, val)
    if metric not in SEGMENTATION_METRICS:
        raise ConfigError(f"unknown segmentation metric {metric!r}. Fix: use one of {', '.join(SEGMENTATION_METRICS)}.")
    if not len(candidates) or not all(isinstance(c, (int, float)) and 0 < c <= 1 for c in candidates):
        raise ConfigError(f"threshold candidates {list(candidates)!r} must be numbers in (0, 1].")
    target, available = val.class_masks(), val.mask_available
    # The most probable defect class and its probability, computed once for every candidate.
    anomaly = maps.anomaly_map("max")
    best_class = maps.probabilities[:, 1:].argmax(axis=1) + 1

    def value_at(threshold: float) -> float:
        pred = np.where(anomaly >= threshold, best_class, 0)
        return segmentation_value(metric, pred, target, len(maps.classes), available=available)

    scored = [(value_at(float(c)), float(c)) for c in candidates]
    finite = [(v, c) for v, c in scored if not np.isnan(v)]
    default_value = value_at(DEFAULT_THRESHOLD)
    if not finite:
        return SegmentationThreshold(metric, DEFAULT_THRESHOLD, default_value, default_value)
    value, threshold = max(finite, key=lambda vc: (vc[0], -abs(vc[1] - DEFAULT_THRESHOLD)))
    return SegmentationThreshold(metric, threshold, value, default_value)
