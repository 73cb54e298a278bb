"""The model behind the service: a run folder loaded once, and one call that scores a batch.

A run of `defectmine fit` (a detector) or `defectmine segment fit` (a segmenter) is served the same
way: its model/ is loaded once, the decision threshold is the run's (chosen on validation, read through
`pipeline.predict.run_context`, which also refuses weights that are not the run's), and every image
answers with a score, a decision and an overlay.

Per-class areas: a segmenter gives them from its class mask (pixels and percent of the image per defect
class, at the overlay's size, letterbox left out), as `segment predict` writes them. A detector's map
carries no class and its image threshold is not a pixel threshold, so a detector answers
``"areas": null`` rather than a number that would look like a measurement.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from defectmine import __version__
from defectmine.errors import DataError
from defectmine.pipeline.predict_inputs import Decoded
from defectmine.pipeline.run_folder import METRICS_FILE, MODEL_DIR, RUN_CONFIG, SPLIT_FILE

ANOMALOUS, NORMAL = "anomalous", "normal"


@dataclass
class Scored:
    """What the service says about one image."""

    score: float
    decision: str | None  # "anomalous" / "normal"; None when the run has no threshold
    areas: dict | None  # {class: {"pixels": n, "percent": p}} (segmenters), None (detectors)
    overlay: np.ndarray | None  # uint8 (H, W, 3) at the decoded display size
    predicted_class: str | None = None  # the largest defect class (segmenters), when anomalous


@dataclass
class ServedModel:
    """A run folder's model, threshold and display settings, loaded once.

    kind: "detector" or "segmenter"; classes: the defect classes a reviewer may assign (a segmenter's
    own; for a detector, those of the run's split, else none).
    """

    run_dir: Path
    kind: str
    model: object
    threshold: float | None
    classes: tuple[str, ...]
    display_range: tuple[float, float] | None = None
    display_quantile: float = 0.25
    info: dict = field(default_factory=dict)

    @property
    def spec(self):
        return self.model.spec_

    def score(self, batch: list[Decoded]) -> list[Scored]:
        """Score decoded images (all readable) in one model call; overlays drawn on each image's
        display copy."""
        pixels = torch.from_numpy(np.stack([d.model_input for d in batch]))
        with torch.inference_mode():
            return self._segment(batch, pixels) if self.kind == "segmenter" else self._detect(batch, pixels)

    def _decision(self, score: float) -> str | None:
        if self.threshold is None:
            return None
        return ANOMALOUS if score >= self.threshold else NORMAL

    def _detect(self, batch: list[Decoded], pixels: torch.Tensor) -> list[Scored]:
        from defectmine.explain import display_range, overlay

        scores = self.model.score(pixels)
        maps = scores.maps
        lo_hi = self.display_range
        if maps is not None and lo_hi is None:  # a bare model: this batch's range (stated in /model)
            lo_hi = display_range(maps, self.display_quantile)
        out = []
        for k, decoded in enumerate(batch):
            heat = None
            if maps is not None and decoded.display is not None:
                heat = overlay(decoded.display, maps[k], *lo_hi, content=decoded.content)
            score = float(scores.image[k])
            out.append(Scored(score, self._decision(score), None, heat))
        return out

    def _segment(self, batch: list[Decoded], pixels: torch.Tensor) -> list[Scored]:
        import cv2

        from defectmine.pipeline.segment_run import IMAGE_SCORE
        from defectmine.report.segment import class_areas, class_overlay

        maps = self.model.predict(pixels)
        labels = maps.class_index(self.model.threshold_, how=IMAGE_SCORE)
        scores = maps.anomaly_scores(IMAGE_SCORE).image
        out = []
        for k, decoded in enumerate(batch):
            top, left, height, width = decoded.content
            content = labels[k, top:top + height, left:left + width].astype(np.uint8)  # letterbox is not image
            shown = decoded.display
            mask = cv2.resize(content, (shown.shape[1], shown.shape[0]), interpolation=cv2.INTER_NEAREST)
            areas = {name: {"pixels": int(px), "percent": round(float(pct), 4)}
                     for name, (px, pct) in class_areas(mask, maps.classes).items()}
            score = float(scores[k])
            decision = self._decision(score)
            biggest = max(areas, key=lambda name: areas[name]["pixels"]) if areas else None
            predicted = biggest if decision == ANOMALOUS and biggest and areas[biggest]["pixels"] else None
            out.append(Scored(score, decision, areas, class_overlay(shown, mask), predicted))
        return out

    def describe(self) -> dict:
        """GET /model: what is served (kind, name, spec, threshold, classes, the run's config and
        metrics as recorded, library version)."""
        return {"run": str(self.run_dir), "kind": self.kind, "version": __version__,
                "threshold": self.threshold, "classes": list(self.classes),
                "display_range": list(self.display_range) if self.display_range else "per batch",
                "areas": "per defect class from the class mask" if self.kind == "segmenter"
                else "null: a detector's map has no classes and no pixel threshold",
                **self.info}


def load_served_model(run_dir: Path | str) -> ServedModel:
    """Load the model of a run folder (detector or segmenter) with the run's threshold and display
    range. One DataError names the folder when it is not a run."""
    from defectmine.explain import display_range
    from defectmine.models.base import read_model_document
    from defectmine.pipeline.predict import run_context

    run_dir = Path(run_dir).expanduser()
    model_dir = run_dir / MODEL_DIR
    if not (model_dir / "config.json").is_file():
        raise DataError(f"{run_dir}: not a run folder (no {MODEL_DIR}/config.json). Fix: pass the folder that "
                        "`defectmine fit --out` or `defectmine segment fit --out` wrote.")
    document = read_model_document(model_dir)
    context = run_context(model_dir)
    info = {"model": {k: document.get(k) for k in ("detector", "segmenter", "config", "spec", "defectmine_version")
                      if k in document},
            "run_config": _json_or_empty(run_dir / RUN_CONFIG), "metrics": _json_or_empty(run_dir / METRICS_FILE)}
    quantile = context.get("display_quantile", 0.25)
    if "segmenter" in document:
        from defectmine.segment import load_segmenter

        model = load_segmenter(model_dir)
        threshold = context.get("threshold", model.threshold_)
        threshold = model.threshold_ if threshold is None else threshold
        return ServedModel(run_dir, "segmenter", model, float(threshold), tuple(model.classes_[1:]),
                           display_quantile=quantile, info=info)
    from defectmine.models.registry import load_detector

    model = load_detector(model_dir)
    threshold = context.get("threshold")
    lo_hi = display_range(np.asarray(context["map_range"], dtype=np.float64), quantile) \
        if context.get("map_range") is not None else None
    return ServedModel(run_dir, "detector", model, None if threshold is None else float(threshold),
                       _split_classes(run_dir / SPLIT_FILE), lo_hi, quantile, info)


def _json_or_empty(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _split_classes(path: Path) -> tuple[str, ...]:
    """The defect classes named in a run's split.csv (empty when there is none)."""
    import csv

    if not path.is_file():
        return ()
    with path.open(newline="", encoding="utf-8") as f:
        names = {row.get("defect_class") or "" for row in csv.DictReader(f)}
    return tuple(sorted(n for n in names if n and n != ANOMALOUS))
