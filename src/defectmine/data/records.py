"""The one record type that every dataset, split and manifest is made of."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

NORMAL = "normal"
ANOMALOUS = "anomalous"
LABELS = (NORMAL, ANOMALOUS)
SPLITS = ("train", "train_anomalous", "val", "test", "")


@dataclass(frozen=True)
class Record:
    """One image on disk and what is known about it.

    `path` and `mask` are absolute paths. `defect_class` is empty for normal images.
    `meta` keeps dataset-specific facts (e.g. ELPV's defect probability and cell type).
    """

    path: Path
    label: str
    defect_class: str = ""
    mask: Path | None = None
    split: str = ""
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_anomalous(self) -> bool:
        return self.label == ANOMALOUS

    def with_split(self, split: str) -> "Record":
        return replace(self, split=split)


def labels_of(records: list[Record]) -> list[int]:
    """0 for normal, 1 for anomalous, in record order."""
    return [int(r.is_anomalous) for r in records]
