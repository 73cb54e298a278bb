"""Detector registry: name -> class. Adding a detector is one line here."""

from __future__ import annotations

import json
from pathlib import Path

from defectmine.errors import DataError, lookup
from defectmine.models.base import CONFIG_FILE, Detector
from defectmine.models.classifier import Classifier
from defectmine.models.fcdd import FCDD
from defectmine.models.liac import LIAC

DETECTORS: dict[str, type[Detector]] = {
    FCDD.name: FCDD,
    Classifier.name: Classifier,
    LIAC.name: LIAC,
}


def detector_class(name: str) -> type[Detector]:
    return lookup(DETECTORS, name, "detector")


def create(name: str, **params) -> Detector:
    """A new, unfitted detector by registry name."""
    return detector_class(name)(**params)


def load_detector(path: Path) -> Detector:
    """Load any saved detector; the folder's config.json says which class."""
    config_path = Path(path) / CONFIG_FILE
    if not config_path.is_file():
        raise DataError(f"{path}: not a saved model folder ({CONFIG_FILE} missing).")
    name = json.loads(config_path.read_text()).get("detector", "")
    return detector_class(name).load(Path(path))
