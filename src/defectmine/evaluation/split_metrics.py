"""Metrics of one run: a threshold chosen on validation, image metrics on val and test, pixel metrics
where masks exist. The pipeline calls this; it decides nothing about files or models."""

from __future__ import annotations

from typing import Any

import numpy as np

from defectmine.evaluation.metrics import image_metrics
from defectmine.evaluation.pixel import pixel_metrics_where, pixel_threshold_max_dice
from defectmine.evaluation.selection import check_val_only
from defectmine.evaluation.thresholds import Threshold, choose_threshold


def threshold_on_val(rule: str, val: Any, val_scores: Any, **params: Any) -> Threshold:
    """`choose_threshold` on a validation dataset: refuses any image whose split is not "val"."""
    check_val_only(val, "the decision threshold")
    return choose_threshold(rule, val.labels, np.asarray(getattr(val_scores, "image", val_scores)), **params)


def evaluate_split(val: Any, val_scores: Any, test: Any, test_scores: Any, *, rule: str, **params: Any) -> dict:
    """Threshold from validation only, metrics on val and test (image; pixel where masks exist).

    Args:
        val, test: datasets (records with their split, labels, masks).
        val_scores, test_scores: their `Scores` (image scores, maps or None).
        rule, params: the threshold rule and its parameters (see `choose_threshold`).

    Returns:
        {"threshold", "val", "test" (None for an empty test set), and "test_pixel" when test images
        have masks and the detector gives maps: pixel metrics over the images whose masks are known,
        with "n_images" and "n_images_without_mask", or None when no evaluated image has a defect}.
    """
    threshold = threshold_on_val(rule, val, val_scores, **params)
    result = {
        "threshold": threshold.to_dict(),
        "val": image_metrics(val.labels, val_scores.image, threshold.value),
        "test": image_metrics(test.labels, test_scores.image, threshold.value) if len(test) else None,
    }
    if len(test) and test.has_masks and test_scores.maps is not None:
        # Anomalous images without a mask are left out, never counted as all-normal pixels; the result
        # says how many images were evaluated and how many were left out.
        pixel_threshold = None
        if val.has_masks and val_scores.maps is not None and val.masks()[val.mask_available].any():
            pixel_threshold = pixel_threshold_max_dice(val.masks(), val_scores.maps, available=val.mask_available)
        result["test_pixel"] = pixel_metrics_where(test.masks(), test_scores.maps, test.mask_available,
                                                   pixel_threshold)
    return result
