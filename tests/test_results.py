"""Result types: Scores (moved to core, still importable from models.base) and per-class ClassMaps."""

import ast
from pathlib import Path

import numpy as np
import pytest

import defectmine.core
from defectmine.core import ClassMaps, Scores
from defectmine.errors import ConfigError, DataError

CLASSES = ("background", "crack", "spot")


def _maps():
    """2 images, 3 classes, 1x3 pixels; softmax-like columns whose answers are easy to read off."""
    p = np.zeros((2, 3, 1, 3), dtype=np.float32)
    # image 0: pixel 0 clear background, pixel 1 crack-ish, pixel 2 split between two defects
    p[0, :, 0, 0] = [0.9, 0.05, 0.05]
    p[0, :, 0, 1] = [0.3, 0.6, 0.1]
    p[0, :, 0, 2] = [0.2, 0.35, 0.45]
    # image 1: all background
    p[1, 0] = 1.0
    return ClassMaps(p, CLASSES)


def test_scores_moved_to_core_and_still_importable_from_models_base():
    from defectmine.models.base import Scores as FromBase

    assert FromBase is Scores
    scores = Scores(image=[1, 2])
    assert scores.image.dtype == np.float64 and len(scores) == 2 and scores.maps is None
    with pytest.raises(ValueError, match="2 image scores but 1 maps"):
        Scores(image=[1, 2], maps=np.zeros((1, 4, 4)))


def test_core_imports_nothing_from_defectmine_but_errors():
    for path in Path(defectmine.core.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("defectmine"):
                assert node.module.startswith(("defectmine.core", "defectmine.errors")), (path.name, node.module)
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("defectmine") for a in node.names), path.name


def test_argmax_gives_class_indices():
    index = _maps().argmax()
    assert index.dtype == np.int64 and index.shape == (2, 1, 3)
    assert index[0, 0].tolist() == [0, 1, 2] and (index[1] == 0).all()


def test_anomaly_scores_from_background_and_from_max():
    maps = _maps()
    background = maps.anomaly_scores()
    np.testing.assert_allclose(background.maps[0, 0], [0.1, 0.7, 0.8], rtol=1e-6)
    np.testing.assert_allclose(background.image, [0.8, 0.0], rtol=1e-6)
    maximum = maps.anomaly_scores(how="max")
    np.testing.assert_allclose(maximum.maps[0, 0], [0.05, 0.6, 0.45], rtol=1e-6)
    np.testing.assert_allclose(maximum.image, [0.6, 0.0], rtol=1e-6)
    assert isinstance(background, Scores) and background.maps.shape == (2, 1, 3)


@pytest.mark.parametrize("how", ["background", "max"])
def test_class_index_marks_what_the_same_threshold_marks_on_the_anomaly_map(how):
    maps = _maps()
    for threshold in (0.05, 0.5, 0.75, 2.0):
        index = maps.class_index(threshold, how=how)
        assert index.dtype == np.int64
        np.testing.assert_array_equal(index > 0, maps.anomaly_scores(how).maps >= threshold)
    # a split pixel takes its most probable defect class, even where the background is not the least likely
    assert maps.class_index(0.5)[0, 0].tolist() == [0, 1, 2]
    assert maps.class_index(0.75)[0, 0].tolist() == [0, 0, 2]


def test_defect_classes_and_length():
    maps = _maps()
    assert maps.defect_classes == ("crack", "spot") and len(maps) == 2


@pytest.mark.parametrize(
    "probabilities,classes,message",
    [
        (np.zeros((3, 1, 1), np.float32), CLASSES, "expected \\(N, C, H, W\\)"),
        (np.zeros((1, 3, 2, 2), np.int64), CLASSES, "dtype int64"),
        (np.zeros((1, 2, 2, 2), np.float32), CLASSES, "2 probability channels but 3 class names"),
        (np.zeros((1, 1, 2, 2), np.float32), ("background",), "at least one defect class"),
        (np.zeros((1, 3, 2, 2), np.float32), ("background", "crack", "crack"), "distinct"),
        (np.full((1, 3, 2, 2), np.nan, np.float32), CLASSES, "NaN"),
        (np.full((1, 3, 2, 2), 1.5, np.float32), CLASSES, "outside \\[0, 1\\].*softmax"),
        (np.full((1, 3, 2, 2), -0.1, np.float32), CLASSES, "outside \\[0, 1\\]"),
    ],
)
def test_invalid_class_maps_are_named(probabilities, classes, message):
    with pytest.raises(DataError, match=message):
        ClassMaps(probabilities, classes)


def test_bad_threshold_and_mode_are_config_errors():
    maps = _maps()
    with pytest.raises(ConfigError, match="finite number"):
        maps.class_index(float("nan"))
    with pytest.raises(ConfigError, match="how='mean' is unknown"):
        maps.anomaly_scores(how="mean")


def test_empty_batch():
    empty = ClassMaps(np.zeros((0, 2, 4, 4), np.float32), ("background", "defect"))
    scores = empty.anomaly_scores()
    assert len(scores) == 0 and scores.maps.shape == (0, 4, 4) and empty.class_index(0.5).shape == (0, 4, 4)
