"""Result types shared by detection and segmentation.

    Scores(image=(N,), maps=(N, H, W) | None)           what a detector's `score` returns
    ClassMaps(probabilities=(N, C, H, W), classes=...)   what a segmenter's `predict` returns

`ClassMaps.anomaly_scores()` turns per-class maps into `Scores`, so segmenters are evaluated, thresholded
and reported by the same code as detectors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from defectmine.errors import ConfigError, DataError

# How a per-class map becomes one anomaly map (see ClassMaps.anomaly_map).
ANOMALY_MAPS = ("background", "max")


@dataclass
class Scores:
    """Detector output, the same in every mode.

    image: (N,) anomaly score per image, higher = more anomalous.
    maps: (N, H, W) anomaly maps at the model's input resolution, or None for detectors without maps.
    """

    image: np.ndarray
    maps: np.ndarray | None = None

    def __post_init__(self):
        self.image = np.asarray(self.image, dtype=np.float64)
        if self.maps is not None and len(self.maps) != len(self.image):
            raise ValueError(f"Scores: {len(self.image)} image scores but {len(self.maps)} maps.")

    def __len__(self) -> int:
        return len(self.image)


@dataclass
class ClassMaps:
    """Per-class probability maps of N images: what a segmenter predicts.

    probabilities: (N, C, H, W) floats in [0, 1]; channel 0 is the background, channels 1..C-1 the
        defect classes. They need not sum to 1 over C (per-class sigmoids are allowed as well as a
        softmax).
    classes: the C class names, ``classes[0]`` the background's (e.g. ``("background", "crack")``).
    """

    probabilities: np.ndarray
    classes: tuple[str, ...]

    def __post_init__(self):
        probabilities = np.asarray(self.probabilities)
        self.classes = tuple(self.classes)
        if probabilities.ndim != 4:
            raise DataError(
                f"ClassMaps: probabilities of shape {probabilities.shape}; expected (N, C, H, W). "
                "Fix: add the batch and class axes (one image is (1, C, H, W))."
            )
        if not np.issubdtype(probabilities.dtype, np.floating):
            raise DataError(
                f"ClassMaps: probabilities of dtype {probabilities.dtype}; expected floats in [0, 1]. "
                "Fix: pass softmax or sigmoid outputs, not labels."
            )
        n_classes = probabilities.shape[1]
        if len(self.classes) != n_classes:
            raise DataError(
                f"ClassMaps: {n_classes} probability channels but {len(self.classes)} class names "
                f"{self.classes}. Fix: give one name per channel, the background first."
            )
        if n_classes < 2:
            raise DataError("ClassMaps: needs the background and at least one defect class (C >= 2).")
        if not all(isinstance(c, str) and c for c in self.classes) or len(set(self.classes)) != n_classes:
            raise DataError(f"ClassMaps: class names {self.classes} must be distinct non-empty strings.")
        if not np.isfinite(probabilities).all():
            raise DataError("ClassMaps: probabilities hold NaN or infinite values. Fix: check the model's output.")
        if probabilities.size and (probabilities.min() < 0 or probabilities.max() > 1):
            raise DataError(
                f"ClassMaps: probabilities range over [{probabilities.min():g}, {probabilities.max():g}], "
                "outside [0, 1]. Fix: apply softmax (or sigmoid) to the logits first."
            )
        self.probabilities = probabilities

    def __len__(self) -> int:
        return len(self.probabilities)

    @property
    def defect_classes(self) -> tuple[str, ...]:
        """The class names without the background: what class index i (i >= 1) means is ``classes[i]``."""
        return self.classes[1:]

    def argmax(self) -> np.ndarray:
        """(N, H, W) int64: the most probable class of each pixel (0 = background; ties go to the lower index)."""
        return self.probabilities.argmax(axis=1).astype(np.int64)

    def anomaly_map(self, how: str = "background") -> np.ndarray:
        """(N, H, W) float: how likely each pixel is to be a defect of any class.

        how: ``"background"``: 1 - P(background), the probability of "some defect" when the channels
            are a softmax; ``"max"``: the largest defect-class probability, for per-class sigmoids
            (where 1 - P(background) means little). For two classes and a softmax both agree.
        """
        if how == "background":
            return 1.0 - self.probabilities[:, 0]
        if how == "max":
            return self.probabilities[:, 1:].max(axis=1)
        raise ConfigError(f"ClassMaps: how={how!r} is unknown. Fix: use one of {', '.join(ANOMALY_MAPS)}.")

    def class_index(self, threshold: float, how: str = "background") -> np.ndarray:
        """(N, H, W) int64 class-index map: 0 where ``anomaly_map(how) < threshold``, elsewhere the most
        probable defect class (1..C-1).

        So the defect pixels are exactly those the same threshold marks on ``anomaly_scores(how).maps``:
        a threshold chosen on validation `Scores` gives the matching class map.
        """
        number = isinstance(threshold, (int, float, np.number)) and not isinstance(threshold, bool)
        if not number or not math.isfinite(threshold):
            raise ConfigError(f"ClassMaps: threshold={threshold!r} must be a finite number, e.g. 0.5.")
        defect = self.anomaly_map(how) >= threshold
        best_defect = self.probabilities[:, 1:].argmax(axis=1).astype(np.int64) + 1
        return np.where(defect, best_defect, 0).astype(np.int64)

    def anomaly_scores(self, how: str = "background") -> Scores:
        """These maps as detector `Scores`: maps = ``anomaly_map(how)``, image score = its maximum over the
        image (the most defect-like pixel; for ``how="max"`` the largest defect-class probability)."""
        maps = self.anomaly_map(how).astype(np.float32)
        image = maps.reshape(len(maps), -1).max(axis=1) if maps.size else np.zeros(len(maps))
        return Scores(image=image, maps=maps)
