"""The per-image files of a run: scores.csv rows and the HTML report with its heatmap galleries."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from defectmine.report.files import write_scores_csv
from defectmine.report.gallery import ReportImage, worst_errors
from defectmine.report.html import write_report


def write_run_scores(path: Path, parts: Sequence[tuple[object, object]], threshold: float) -> Path:
    """scores.csv: one row per image of every (dataset, Scores) part, with its split, label, class,
    score and the decision at `threshold`."""
    rows = []
    for dataset, scores in parts:
        for record, score in zip(dataset.records, scores.image):
            rows.append({
                "path": str(record.path), "split": record.split, "label": record.label,
                "defect_class": record.defect_class, "score": float(score),
                "predicted": "anomalous" if score >= threshold else "normal",
            })
    return write_scores_csv(path, rows)


def image_groups(dataset) -> list[str]:
    """The gallery/histogram group of every image: its defect class, or "normal"."""
    return [r.defect_class or r.label if r.is_anomalous else "normal" for r in dataset.records]


def write_run_report(path: Path, *, title: str, document: Mapping, metrics: Mapping, dataset, scores,
                     display_quantile: float = 0.25, n_images: int = 16, n_errors: int | None = None) -> Path:
    """report.html of a run: metrics of the reported part, plots, the top-scoring images, the worst
    false positives and false negatives at the threshold (`n_errors` of each, default `n_images`),
    each beside its ground-truth mask when it has one, and the files skipped while decoding."""
    groups = image_groups(dataset)
    threshold = metrics["threshold"]["value"]
    n_errors = n_images if n_errors is None else n_errors
    top = np.argsort(-scores.image, kind="stable")[:n_images]
    tile = _tile_maker(dataset, scores, groups, display_quantile)
    false_positives = false_negatives = None
    if threshold is not None and math.isfinite(float(threshold)):
        fp, fn = worst_errors(dataset.labels, scores.image, threshold, n_errors)
        false_positives, false_negatives = [tile(i) for i in fp], [tile(i) for i in fn]
    part = "test" if metrics.get("test") else "val"
    return write_report(
        path, title=title, metrics=metrics[part], threshold=metrics["threshold"], labels=dataset.labels,
        scores=scores.image, groups=groups, top_images=[tile(i) for i in top], config=dict(document),
        pixel_metrics=metrics.get("test_pixel"), false_positives=false_positives,
        false_negatives=false_negatives, skipped_files=metrics.get("skipped_files") or None,
    )


def _tile_maker(dataset, scores, groups: list[str], display_quantile: float):
    """A function from an image's position to its gallery tile: the heatmap over the image (the plain
    image when the detector gives no maps) and its ground-truth mask when the record has one. The
    display range is that of the whole set, so that tiles compare."""
    from defectmine.explain import as_rgb_uint8, display_range, overlay

    raw = dataset.raw_images()
    masks = dataset.masks() if dataset.has_masks else None
    lo_hi = display_range(scores.maps, display_quantile) if scores.maps is not None else None

    def tile(index) -> ReportImage:
        index = int(index)
        record = dataset.records[index]
        image = as_rgb_uint8(raw[index].numpy())
        heat = image if lo_hi is None else overlay(image, scores.maps[index], *lo_hi)
        has_mask = masks is not None and record.mask is not None
        return ReportImage(
            name=record.path.name, overlay=heat, score=float(scores.image[index]), label=record.label,
            group=groups[index], mask=masks[index] if has_mask else None, image=image if has_mask else None,
        )

    return tile
