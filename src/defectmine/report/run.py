"""The per-image files of a run: scores.csv rows and the HTML report with its heatmap gallery."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from defectmine.report.files import write_scores_csv
from defectmine.report.html import ReportImage, write_report


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
                     display_quantile: float = 0.25, n_images: int = 16) -> Path:
    """report.html of a run: metrics of the reported part, plots, and the top-scoring images' heatmaps."""
    from defectmine.explain import display_range, overlay

    groups = image_groups(dataset)
    top = np.argsort(-scores.image)[:n_images]
    images = []
    if scores.maps is not None and len(top):
        lo, hi = display_range(scores.maps, display_quantile)
        raw = dataset.raw_images()
        for index in top:
            record = dataset.records[index]
            images.append(ReportImage(
                name=record.path.name, overlay=overlay(raw[index].numpy(), scores.maps[index], lo, hi),
                score=float(scores.image[index]), label=record.label, group=groups[index],
            ))
    part = "test" if metrics.get("test") else "val"
    return write_report(
        path, title=title, metrics=metrics[part], threshold=metrics["threshold"], labels=dataset.labels,
        scores=scores.image, groups=groups, top_images=images, config=dict(document),
        pixel_metrics=metrics.get("test_pixel"),
    )
