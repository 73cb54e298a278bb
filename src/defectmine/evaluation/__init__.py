"""Evaluation: thresholds chosen on validation data, image and pixel metrics, multi-run aggregation.

Detectors produce scores; everything that turns scores into decisions and numbers lives here.
"""

from defectmine.evaluation.aggregate import aggregate, format_mean_std
from defectmine.evaluation.metrics import UndefinedMetricWarning, image_metrics, pr_points, roc_points
from defectmine.evaluation.pixel import pixel_metrics, pixel_metrics_where, pixel_threshold_max_dice
from defectmine.evaluation.segmentation import segmentation_metrics, segmentation_threshold_on_val
from defectmine.evaluation.selection import check_val_only, validation_value
from defectmine.evaluation.split_metrics import evaluate_split, threshold_on_val
from defectmine.evaluation.thresholds import (
    THRESHOLD_RULES,
    Threshold,
    choose_threshold,
    fixed_threshold,
    max_f1_threshold,
    mean_std_threshold,
)

__all__ = [
    "THRESHOLD_RULES",
    "Threshold",
    "UndefinedMetricWarning",
    "aggregate",
    "check_val_only",
    "evaluate_split",
    "choose_threshold",
    "fixed_threshold",
    "format_mean_std",
    "image_metrics",
    "max_f1_threshold",
    "mean_std_threshold",
    "pixel_metrics",
    "pixel_metrics_where",
    "pixel_threshold_max_dice",
    "pr_points",
    "roc_points",
    "segmentation_metrics",
    "segmentation_threshold_on_val",
    "threshold_on_val",
    "validation_value",
]
