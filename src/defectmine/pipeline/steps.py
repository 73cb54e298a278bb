"""The one fit -> score -> evaluate path: `fit_run`, the mining sweep and the benchmarks all call
`fit_and_evaluate`, so a number in a sweep row, a run folder and BENCHMARKS.md is made the same way."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from defectmine.data import ImageDataset
from defectmine.errors import ConfigError
from defectmine.evaluation.split_metrics import evaluate_split
from defectmine.models.base import Detector, Scores
from defectmine.models.registry import create
from defectmine.pipeline.config import RunConfig
from defectmine.pipeline.data import PreparedData


def create_detector(config: RunConfig) -> Detector:
    """A new, unfitted detector of the configured registry name, seed and parameters."""
    params = {"seed": config.seed, "quiet": config.quiet, **config.detector_params}
    return create(config.detector, **params)


def check_input_size(detector: Detector, config: RunConfig) -> None:
    """Build the detector's network for the configured image spec and push one blank image through it,
    so that an image size too small for the backbone fails now, in one line, and not mid-training."""
    build = getattr(detector, "_build_network", None)
    if build is None:
        return
    spec = config.spec
    try:
        with torch.no_grad():
            network = build(spec).eval()
            network(torch.zeros((1, spec.channels, *spec.size)))
    except (RuntimeError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"--image-size {config.image_size} is too small for detector {config.detector!r} with backbone "
            f"{config.detector_params.get('backbone', 'cnn')!r} ({first_line}). Fix: use a larger --image-size "
            "(e.g. 128) or a backbone with a smaller stride."
        ) from None


def fit_detector(detector: Detector, data: PreparedData) -> float:
    """Fit on the prepared normal (and anomalous) images, selecting on val; returns the seconds taken."""
    started = time.perf_counter()
    detector.fit(data.normal, data.anomalous, val=data.val)
    return time.perf_counter() - started


def score_sets(detector: Detector, val: ImageDataset, test: ImageDataset,
               heatmap: str = "native") -> tuple[Scores, Scores, float]:
    """Scores of the val and test images, and the scoring time in milliseconds per image.

    heatmap: "native" (the detector's own maps) or "gradcam" (Grad-CAM of the image score).
    """
    options = {} if heatmap == "native" else {"heatmap": heatmap}
    started = time.perf_counter()
    val_scores = detector.score(val, **options)
    test_scores = detector.score(test, **options) if len(test) else Scores(np.zeros(0))
    score_ms = 1000 * (time.perf_counter() - started) / max(len(val) + len(test), 1)
    return val_scores, test_scores, score_ms


def evaluate_scores(config: RunConfig, val: ImageDataset, val_scores: Scores, test: ImageDataset,
                    test_scores: Scores) -> dict:
    """Threshold from validation only (the configured rule), metrics on test."""
    return evaluate_split(val, val_scores, test, test_scores, rule=config.threshold_rule, **config.threshold_params())


@dataclass
class Outcome:
    """What one fit -> score -> evaluate pass produced."""

    detector: Detector
    metrics: dict
    val_scores: Scores
    test_scores: Scores
    fit_seconds: float
    score_ms: float


def fit_and_evaluate(config: RunConfig, data: PreparedData, detector: Detector | None = None) -> Outcome:
    """Fit a detector (a new one from `config` unless given) on `data`, score val and test, evaluate.

    `metrics` holds the threshold, val/test (and pixel) metrics, "timing" (fit seconds, scoring ms per
    image) and "training" (set sizes, selected epoch, synthetic defects used).
    """
    detector = create_detector(config) if detector is None else detector
    fit_seconds = fit_detector(detector, data)
    val_scores, test_scores, score_ms = score_sets(detector, data.val, data.test)
    metrics = evaluate_scores(config, data.val, val_scores, data.test, test_scores)
    metrics["timing"] = {"fit_seconds": fit_seconds, "score_ms_per_image": score_ms}
    metrics["training"] = {
        "n_normal": len(data.normal),
        "n_anomalous": 0 if data.anomalous is None else len(data.anomalous),
        "best_epoch": getattr(detector, "best_epoch_", None),
        "stopped_epoch": getattr(detector, "stopped_epoch_", None),  # early stopping (patience), else None
        "synthetic": getattr(detector, "synthetic_", None),
    }
    return Outcome(detector, metrics, val_scores, test_scores, fit_seconds, score_ms)
