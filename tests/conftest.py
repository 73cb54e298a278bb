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
