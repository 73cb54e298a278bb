"""Segmenter registry: name -> class. Adding a segmenter is one line here."""

from __future__ import annotations

from pathlib import Path

from defectmine.errors import DataError, lookup
from defectmine.models.base import CONFIG_FILE, read_model_document, saved_model_class
from defectmine.segment.segmenter import Segmenter
from defectmine.segment.unet import UNet

SEGMENTERS: dict[str, type[Segmenter]] = {
    UNet.name: UNet,
}


def segmenter_class(name: str) -> type[Segmenter]:
    return lookup(SEGMENTERS, name, "segmenter")


def create_segmenter(name: str, **params) -> Segmenter:
    """A new, unfitted segmenter by registry name."""
    return segmenter_class(name)(**params)


def load_segmenter(path: Path) -> Segmenter:
    """Load any saved segmenter; the folder's config.json says which class. Broken folders raise one
    DataError naming the file (see `Segmenter.load`)."""
    path = Path(path)
    document = read_model_document(path)
    if "segmenter" not in document:
        raise DataError(f"{path / CONFIG_FILE}: holds the detector {document['detector']!r}, not a segmenter. "
                        "Fix: load it with defectmine.models.registry.load_detector.")
    return saved_model_class(path, document, "segmenter", SEGMENTERS).load(path)
