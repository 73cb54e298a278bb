"""`predict`: score a folder (or manifest) of images with a saved model: scores.csv plus heatmap overlays."""

from __future__ import annotations

from pathlib import Path

from defectmine.data import ImageDataset, read_manifest
from defectmine.models.registry import load_detector
from defectmine.pipeline.data import list_images
from defectmine.pipeline.run_folder import METRICS_FILE, SCORES_FILE


def predict_folder(model_dir: Path, data: str, out_dir: Path, *, threshold: float | None = None,
                   display_quantile: float = 0.25, overlays: bool = True, skip_bad: bool = False,
                   quiet: bool = False) -> Path:
    """Score a folder (or manifest) with a saved model: scores.csv plus full-resolution heatmap overlays."""
    from defectmine.data.images import read_image
    from defectmine.explain import display_range, overlay
    from defectmine.report.files import read_json, save_png

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    detector = load_detector(model_dir)
    if threshold is None:
        metrics_path = model_dir.parent / METRICS_FILE
        if metrics_path.is_file():
            threshold = read_json(metrics_path)["threshold"]["value"]
    path = Path(data)
    records = read_manifest(path) if path.suffix.lower() == ".csv" else list_images(path)
    dataset = ImageDataset(records, detector.spec_, skip_bad=skip_bad, quiet=quiet)
    scores = detector.score(dataset)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    lo, hi = display_range(scores.maps, display_quantile) if scores.maps is not None else (0.0, 1.0)
    for index, record in enumerate(dataset.records):
        row = {"path": str(record.path), "score": float(scores.image[index])}
        if threshold is not None:
            row["predicted"] = "anomalous" if scores.image[index] >= threshold else "normal"
        if overlays and scores.maps is not None:
            original = read_image(record.path)  # full resolution: the heatmap is resized to it
            name = f"{index:05d}_{record.path.stem}.png"
            save_png(out_dir / "overlays" / name, overlay(original, scores.maps[index], lo, hi))
            row["overlay"] = f"overlays/{name}"
        rows.append(row)
    from defectmine.report.files import write_scores_csv

    write_scores_csv(out_dir / SCORES_FILE, rows)
    return out_dir / SCORES_FILE
