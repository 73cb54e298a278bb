"""Detector registry: name -> class. Adding a detector is one line here."""

from __future__ import annotations

from pathlib import Path

from defectmine.errors import DataError, lookup
from defectmine.models.base import CONFIG_FILE, Detector, read_model_document, saved_model_class
from defectmine.models.classifier import Classifier
from defectmine.models.draem import DRAEM
from defectmine.models.fcdd import FCDD
from defectmine.models.liac import LIAC
from defectmine.models.padim import PaDiM
from defectmine.models.segdec import SegDec
from defectmine.models.vae_gradcam import VAEGradCAM

DETECTORS: dict[str, type[Detector]] = {
    FCDD.name: FCDD,
    Classifier.name: Classifier,
    LIAC.name: LIAC,
    SegDec.name: SegDec,
    VAEGradCAM.name: VAEGradCAM,
    DRAEM.name: DRAEM,
    PaDiM.name: PaDiM,
}


def detector_class(name: str) -> type[Detector]:
    return lookup(DETECTORS, name, "detector")


def create(name: str, **params) -> Detector:
    """A new, unfitted detector by registry name."""
    return detector_class(name)(**params)


def load_detector(path: Path) -> Detector:
    """Load any saved detector; the folder's config.json says which class. Broken folders raise one
    DataError naming the file (see `Detector.load`)."""
    path = Path(path)
    document = read_model_document(path)
    if "segmenter" in document:
        raise DataError(f"{path / CONFIG_FILE}: holds the segmenter {document['segmenter']!r}, not a detector. "
                        "Fix: use `defectmine segment predict` (or defectmine.segment.load_segmenter).")
    return saved_model_class(path, document, "detector", DETECTORS).load(path)
