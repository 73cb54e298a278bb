"""`segment predict`: class masks, overlays and per-class areas of a folder of images, in batches.

Listing and decoding are detection predict's (`predict_inputs`: every image in any layout, one file
decoded at a time, `masks/` of the labelled layout left out); the output folder is one unit, built
under a hidden name and moved into place at the end (`run_folder.staged_folder`). Per image:
masks/<n>_<name>.png (a palette PNG whose pixel values are class indices, 0 = background, black),
overlays/<n>_<name>.png, optionally probabilities/<n>_<name>.npy (float16 (C, H, W) per defect class
at the model's size), and one scores.csv row.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from defectmine.errors import ConfigError, DataError
from defectmine.pipeline.predict import SKIPPED_FILE, run_context, stream_batches
from defectmine.pipeline.predict_inputs import DecodedFiles, as_is, list_inputs
from defectmine.pipeline.run_folder import SCORES_FILE, check_out_folder, staged_folder, write_atomic
from defectmine.pipeline.segment_run import IMAGE_SCORE, image_row
from defectmine.segment import load_segmenter

MASK_DIR, OVERLAY_DIR, PROBABILITY_DIR = "masks", "overlays", "probabilities"
#: Longest side of written masks and overlays (larger images are shown smaller, as in predict).
DISPLAY_SIDE = 2048


@dataclass
class SegmentPredictSummary:
    """What `predict_segment_folder` did."""

    out_dir: Path
    n_images: int = 0
    n_with_defects: int = 0
    n_skipped: int = 0
    image_threshold: float | None = None
    pixel_threshold: float | None = None
    seconds: float = 0.0


def predict_segment_folder(model_dir: Path, data: str, out_dir: Path, *, probabilities: bool = False,
                           batch_size: int | None = None, overwrite: bool = False, skip_bad: bool = False,
                           quiet: bool = False) -> SegmentPredictSummary:
    """Segment every image under `data` (folder in any layout, CSV manifest or one image) with a
    saved segmenter and write masks, overlays (and probability maps) and scores.csv into `out_dir`.

    The pixel threshold is the segmenter's (chosen on val at fit); the image decision ("any defect",
    image score = the largest defect-class probability) uses the run's val-chosen image threshold when
    the model sits in a segment run folder, else the pixel threshold. Unreadable images stop the
    command with one error naming them, and nothing is written; with `skip_bad` they are listed in
    skipped.csv (path, reason) instead, beside the symlinked duplicates that were scored once.
    """
    from defectmine.progress import progress_bar

    started = time.perf_counter()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if batch_size is not None and int(batch_size) < 1:
        raise ConfigError(f"--batch-size {batch_size}: must be at least 1, e.g. 32.")
    check_out_folder(out_dir, overwrite)
    segmenter = load_segmenter(model_dir)
    run = run_context(model_dir)  # also refuses weights that are not the run's
    summary = SegmentPredictSummary(out_dir=out_dir, pixel_threshold=segmenter.threshold_)
    summary.image_threshold = run.get("threshold") if run.get("threshold") is not None else segmenter.threshold_
    found = list_inputs(data, exclude=out_dir)
    files = DecodedFiles(found.items, segmenter.spec_, DISPLAY_SIDE)
    loader = DataLoader(files, batch_size=None, shuffle=False, num_workers=0, collate_fn=as_is)
    digits = max(5, len(str(len(found.items) - 1)))
    rows = []
    skipped = [{"path": path, "reason": f"same file as {kept}"} for path, kept in found.duplicates]
    with staged_folder(out_dir) as stage, progress_bar(quiet, True) as bar:
        task = bar.add_task("segmenting images", total=len(found.items), status="")
        for batch in stream_batches(loader, batch_size or segmenter.config.predict_batch_size):
            bad = [d for d in batch if d.model_input is None]
            if bad and not skip_bad:
                named = "; ".join(f"{found.items[d.index].path}: {d.reason}" for d in bad[:5])
                raise DataError(f"{len(bad)} image(s) could not be read: {named}. "
                                "Fix: replace or remove these files, or pass --skip-bad; nothing was written.")
            skipped += [{"path": found.items[d.index].path, "reason": d.reason} for d in bad]
            bar.update(task, advance=len(bad))
            batch = [d for d in batch if d.model_input is not None]
            if not batch:
                continue
            pixels = torch.from_numpy(np.stack([d.model_input for d in batch]))
            maps = segmenter.predict(pixels)
            labels = maps.class_index(segmenter.threshold_, how=IMAGE_SCORE)
            scores = maps.anomaly_scores(IMAGE_SCORE).image
            for k, decoded in enumerate(batch):
                item = found.items[decoded.index]
                name = f"{decoded.index:0{digits}d}_{Path(item.path).stem}"
                row = _write_image(stage, name, decoded, labels[k], maps.probabilities[k] if probabilities else None)
                rows.append({**image_row(None, row.pop("labels"), float(scores[k]), summary.image_threshold,
                                         maps.classes, path=str(item.path)), "label": item.label, **row})
                summary.n_with_defects += int(scores[k] >= summary.image_threshold)
            summary.n_images += len(batch)
            bar.update(task, advance=len(batch))
        if not rows:
            raise DataError(f"none of the {len(found.items)} image(s) could be read. "
                            "Fix: check that the paths point at image files (PNG, JPEG, BMP, TIFF).")
        write_atomic(stage / SCORES_FILE, lambda p: _write_rows(p, rows))
        if skipped:
            write_atomic(stage / SKIPPED_FILE, lambda p: _write_rows(p, skipped))
    summary.n_skipped = len(skipped)
    summary.seconds = time.perf_counter() - started
    return summary


def _write_image(stage: Path, name: str, decoded, labels: np.ndarray, probabilities: np.ndarray | None) -> dict:
    """The mask (cut to the image's content, at its display size), overlay and probability files of one
    image; returns the labels as written and the file names relative to the output folder."""
    from defectmine.report.files import save_png
    from defectmine.report.segment import class_overlay, save_palette_png

    top, left, height, width = decoded.content
    content = labels[top:top + height, left:left + width]  # a padded border is not part of the image
    shown = decoded.display
    mask = cv2.resize(content.astype(np.uint8), (shown.shape[1], shown.shape[0]), interpolation=cv2.INTER_NEAREST)
    files = {"mask": f"{MASK_DIR}/{name}.png", "overlay": f"{OVERLAY_DIR}/{name}.png"}
    save_palette_png(stage / files["mask"], mask)
    save_png(stage / files["overlay"], class_overlay(shown, mask))
    if probabilities is not None:
        files["probabilities"] = f"{PROBABILITY_DIR}/{name}.npy"
        (stage / PROBABILITY_DIR).mkdir(exist_ok=True)
        np.save(stage / files["probabilities"], probabilities[1:].astype(np.float16))
    return {"labels": mask.astype(np.int64), **files}


def _write_rows(path: Path, rows: list[dict]) -> None:
    from defectmine.report.files import write_scores_csv

    write_scores_csv(path, rows)
