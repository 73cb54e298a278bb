"""predict's outputs written as the stream goes: scores.csv and skipped.csv row by row (flushed after each
batch) and the overlays, into the staging folder that `predict_folder` moves into place at the end."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from defectmine.pipeline.run_folder import SCORES_FILE

SKIPPED_FILE = "skipped.csv"
OVERLAY_DIR = "overlays"


class PredictWriter:
    """scores.csv and skipped.csv appended row by row (flushed after each batch), overlays written as
    they come."""

    def __init__(self, stage: Path, threshold: float | None, n_images: int) -> None:
        self.stage, self.threshold = stage, threshold
        self.wrote_overlays = False
        self.unreadable: list[str] = []  # the first few, for an error when nothing could be read
        self._scores = self._skipped = None
        self._scores_writer = self._skipped_writer = None
        self._digits = max(5, len(str(n_images - 1)))  # overlay names sort in scoring order

    def __enter__(self) -> "PredictWriter":
        return self

    def __exit__(self, *exc) -> None:
        for f in (self._scores, self._skipped):
            if f is not None:
                f.close()

    def row(self, item, index: int, score: float, heat: np.ndarray | None) -> None:
        from defectmine.report.files import save_png

        if self._scores is None:
            self._open_scores(with_overlay=heat is not None)
        row = {"path": item.path, "label": item.label, "defect_class": item.defect_class, "score": score}
        if self.threshold is not None:
            row["predicted"] = "anomalous" if score >= self.threshold else "normal"
        if heat is not None:
            name = f"{index:0{self._digits}d}_{Path(item.path).stem}.png"
            save_png(self.stage / OVERLAY_DIR / name, heat)
            row["overlay"] = f"{OVERLAY_DIR}/{name}"
            self.wrote_overlays = True
        self._scores_writer.writerow(row)

    def _open_scores(self, with_overlay: bool) -> None:
        columns = ["path", "label", "defect_class", "score"] + (["predicted"] if self.threshold is not None else [])
        self._scores = (self.stage / SCORES_FILE).open("w", encoding="utf-8", newline="")
        self._scores_writer = csv.DictWriter(self._scores, fieldnames=columns + (["overlay"] if with_overlay else []),
                                             restval="")
        self._scores_writer.writeheader()

    def skip(self, path: str, reason: str) -> None:
        if self._skipped is None:
            self._skipped = (self.stage / SKIPPED_FILE).open("w", encoding="utf-8", newline="")
            self._skipped_writer = csv.writer(self._skipped)
            self._skipped_writer.writerow(["path", "reason"])
        self._skipped_writer.writerow([path, reason])

    def flush(self) -> None:
        """After each batch: what is scored is on disk before the next batch is read."""
        for f in (self._scores, self._skipped):
            if f is not None:
                f.flush()
