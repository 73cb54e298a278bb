"""Shared fixtures: tiny synthetic datasets written to tmp_path, and skipping of real-data tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from defectmine.data.builtin import shared_dir
from defectmine.data.synthetic import write_synthetic_folder
from defectmine.errors import DataError


@pytest.fixture
def synthetic_folder(tmp_path: Path) -> Path:
    """A scan_folder layout: 24 normal 32x32 gray PNGs, 8 anomalous (4 "scratch", 4 "spot") with masks."""
    return write_synthetic_folder(tmp_path / "synthetic")


def _shared_available() -> bool:
    try:
        shared_dir()
    except DataError:
        return False
    return True


def pytest_collection_modifyitems(config, items):
    """Skip tests marked `realdata` when the shared datasets folder is absent (e.g. a bare clone)."""
    if _shared_available():
        return
    skip = pytest.mark.skip(reason="shared/ data folder not found (set DEFECTMINE_SHARED to run real-data tests)")
    for item in items:
        if "realdata" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def tiny_training_sets():
    """12 random normal 16x16 grayscale images and 3 anomalous ones with a bright square: the training
    sets of the lever tests (a tiny fit takes well under a second)."""
    import torch

    from defectmine.data.dataset import ImageDataset
    from defectmine.data.images import ImageSpec

    spec = ImageSpec(size=(16, 16), channels=1)
    generator = torch.Generator().manual_seed(0)
    normal = ImageDataset.from_tensor(torch.randint(0, 255, (12, 1, 16, 16), dtype=torch.uint8, generator=generator), spec)
    anomalous = torch.randint(0, 255, (3, 1, 16, 16), dtype=torch.uint8, generator=generator)
    anomalous[:, :, 4:10, 4:10] = 255
    return normal, ImageDataset.from_tensor(anomalous, spec, labels=[1, 1, 1])
