"""Segmentation metrics on hand-made class maps, and the val-only threshold."""

import math

import numpy as np
import pytest
import torch

from defectmine.core.results import ClassMaps
from defectmine.data import ImageDataset, ImageSpec
from defectmine.errors import ConfigError
from defectmine.evaluation.segmentation import (
    class_counts,
    segmentation_metrics,
    segmentation_threshold_on_val,
    segmentation_value,
    segmentation_value_on_val,
)

CLASSES = ("background", "a", "b")


def maps_1x4(*rows):
    return np.array([[list(r)] for r in rows], dtype=np.int64)  # (N, 1, 4)


def test_class_counts_and_ratios_by_hand():
    target = maps_1x4([1, 1, 0, 2], [0, 0, 0, 0])
    pred = maps_1x4([1, 0, 2, 2], [0, 0, 0, 1])
    # class a: TP 1, FP 1 (image 1), FN 1; class b: TP 1, FP 1, FN 0
    assert class_counts(pred, target, 3).tolist() == [[1, 1, 1], [1, 1, 0]]
    metrics = segmentation_metrics(pred, target, CLASSES)
    assert metrics["per_class"]["a"] == {"iou": pytest.approx(1 / 3), "dice": pytest.approx(0.5), "pixels": 2}
    assert metrics["per_class"]["b"]["iou"] == pytest.approx(1 / 2)
    assert metrics["mean_iou"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert metrics["mean_dice"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert metrics["pooled_iou"] == pytest.approx(2 / 5)  # equation 8: 2 TP / (2 + 2 FP + 1 FN)
    # without the defect-free image its false alarm is gone: class a has TP 1, FP 0, FN 1
    assert metrics["defective_pooled_iou"] == pytest.approx(2 / 4)


def test_a_class_neither_present_nor_predicted_is_left_out_of_the_means():
    target = pred = maps_1x4([1, 1, 0, 0])
    metrics = segmentation_metrics(pred, target, CLASSES)
    assert math.isnan(metrics["per_class"]["b"]["iou"])
    assert metrics["mean_iou"] == 1.0


def test_available_leaves_images_out():
    target = maps_1x4([1, 0, 0, 0], [0, 0, 0, 0])
    pred = maps_1x4([1, 0, 0, 0], [1, 1, 1, 1])
    assert segmentation_value("mean_iou", pred, target, 3) == pytest.approx(1 / 5)
    assert segmentation_value("mean_iou", pred, target, 3, available=[True, False]) == 1.0


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ConfigError, match="outside 0..2"):
        segmentation_value("mean_iou", maps_1x4([3, 0, 0, 0]), maps_1x4([0, 0, 0, 0]), 3)
    with pytest.raises(ConfigError, match="unknown segmentation metric 'miou'"):
        segmentation_value("miou", maps_1x4([0, 0, 0, 0]), maps_1x4([0, 0, 0, 0]), 3)
    with pytest.raises(ConfigError, match="integer class-index maps"):
        segmentation_value("mean_iou", np.zeros((1, 1, 4)), maps_1x4([0, 0, 0, 0]), 3)


def _val_set(split):
    masks = torch.zeros(2, 4, 4, dtype=torch.uint8)
    masks[0, :2, :2] = 1
    images = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    return ImageDataset.from_tensor(images, ImageSpec(size=(4, 4), channels=1), [1, 0], masks,
                                    classes=("background", "a"), split=split)


def _probabilities(defect):
    return ClassMaps(np.stack([1 - defect, defect], axis=1).astype(np.float32), ("background", "a"))


def test_threshold_on_val_beats_or_matches_the_default():
    val = _val_set("val")
    defect = np.zeros((2, 4, 4), dtype=np.float32)
    defect[0, :2, :2] = 0.3  # the defect is found only below 0.5
    defect[1] = 0.1
    chosen = segmentation_threshold_on_val(_probabilities(defect), val)
    assert chosen.threshold in (0.15, 0.2, 0.25, 0.3) and chosen.value == 1.0
    assert chosen.threshold == 0.3  # ties go to the candidate nearest 0.5
    assert chosen.default_value == 0.0
    assert segmentation_value_on_val("mean_iou", _probabilities(defect), val, threshold=0.3) == 1.0


def test_threshold_and_selection_refuse_the_test_split():
    maps = _probabilities(np.zeros((2, 4, 4), dtype=np.float32))
    with pytest.raises(ConfigError, match="validation images only.*'test'"):
        segmentation_threshold_on_val(maps, _val_set("test"))
    with pytest.raises(ConfigError, match="validation images only"):
        segmentation_value_on_val("mean_iou", maps, _val_set("test"))
