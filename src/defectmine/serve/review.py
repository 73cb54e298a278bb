"""The review queue: scored images kept on disk with their overlays, and where reviewers' labels go.

Folder layout (`--review-dir`, by default RUN/review/):

    items/<id>.json          score, decision, areas, the image's path, the review once given
    items/<id>.overlay.png   the heatmap (detector) or class (segmenter) overlay shown on the page
    items/<id>.<ext>         the uploaded bytes, for images that came through POST /score (so that a
                             label points at a file that exists); images of --review-folder stay where
                             they are and are not copied
    labels.csv               the labels, when no other LabelSink is given

The queue is bounded (`max_items`): when full, the oldest item and its files are removed. Labels go to
a `LabelSink`; `CsvLabelSink` appends to a CSV. The labelling loop's store (issue 16) plugs in through
the same one-method protocol.
"""

from __future__ import annotations

import csv
import json
import os
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from defectmine.data.images import IMAGE_SUFFIXES
from defectmine.errors import ConfigError
from defectmine.serve.model import ANOMALOUS, NORMAL, Scored
from defectmine.serve.uploads import RequestError

ITEMS, LABELS_FILE = "items", "labels.csv"


@runtime_checkable
class LabelSink(Protocol):
    """Where a reviewer's label goes: `image_id` is the image's path, `label` "normal" or a defect class."""

    def record(self, image_id: str, label: str, reviewer: str) -> None: ...


class CsvLabelSink:
    """Appends `image_id,label,reviewer,time` rows to a CSV (header written when the file is new)."""

    COLUMNS = ("image_id", "label", "reviewer", "time")

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def record(self, image_id: str, label: str, reviewer: str) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            new = not self.path.is_file() or self.path.stat().st_size == 0
            with self.path.open("a", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                if new:
                    writer.writerow(self.COLUMNS)
                writer.writerow([image_id, label, reviewer, time.strftime("%Y-%m-%dT%H:%M:%S%z")])


@dataclass
class ReviewItem:
    """One image in the queue (also its items/<id>.json)."""

    id: str
    name: str
    image_path: str
    score: float
    decision: str | None
    areas: dict | None
    predicted_class: str | None
    added: float
    label: str | None = None
    reviewer: str | None = None


class ReviewStore:
    """The bounded queue of scored images under `folder`, and the sink its labels go to.

    labels: the defect classes a reviewer may pick besides "normal" (with none, "anomalous").
    """

    def __init__(self, folder: Path | str, classes: tuple[str, ...] = (), max_items: int = 1000,
                 sink: LabelSink | None = None) -> None:
        if int(max_items) < 1:
            raise ConfigError(f"--review-max {max_items}: must be at least 1, e.g. 1000.")
        self.folder, self.max_items = Path(folder), int(max_items)
        self.items_dir = self.folder / ITEMS
        self.items_dir.mkdir(parents=True, exist_ok=True)
        self.labels = (NORMAL, *(classes or (ANOMALOUS,)))
        self.sink = sink if sink is not None else CsvLabelSink(self.folder / LABELS_FILE)
        self._lock = threading.Lock()
        self._items: dict[str, ReviewItem] = {}
        for path in self.items_dir.glob("*.json"):  # a restarted service keeps its queue
            try:
                item = ReviewItem(**json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError):
                continue  # a half-written or foreign file is not part of the queue
            self._items[item.id] = item

    def add(self, name: str, scored: Scored, *, data: bytes | None = None, image_path: str | None = None) -> ReviewItem:
        """Keep one scored image: its uploaded bytes (`data`) or the path where it lies (`image_path`)."""
        from defectmine.report.files import save_png

        item_id = uuid.uuid4().hex[:16]
        if data is not None:
            suffix = Path(name).suffix.lower() if Path(name).suffix.lower() in IMAGE_SUFFIXES else ".img"
            image = self.items_dir / f"{item_id}{suffix}"
            image.write_bytes(data)
            image_path = str(image.resolve())
        if scored.overlay is not None:
            save_png(self.items_dir / f"{item_id}.overlay.png", scored.overlay)
        item = ReviewItem(item_id, name, str(image_path), scored.score, scored.decision, scored.areas,
                          scored.predicted_class, time.time())
        self._write(item)
        with self._lock:
            self._items[item.id] = item
            evicted = sorted(self._items.values(), key=lambda i: i.added)[:max(0, len(self._items) - self.max_items)]
            for old in evicted:
                del self._items[old.id]
        for old in evicted:
            self._remove_files(old)
        return item

    def has_image(self, image_path: str) -> bool:
        with self._lock:
            return any(item.image_path == image_path for item in self._items.values())

    def queue(self) -> list[dict]:
        """Items to review first (highest score first), then the reviewed ones."""
        with self._lock:
            items = list(self._items.values())
        items.sort(key=lambda i: (i.label is not None, -i.score))
        return [{**asdict(i), "overlay": self.overlay_path(i.id) is not None} for i in items]

    def overlay_path(self, item_id: str) -> Path | None:
        path = self.items_dir / f"{item_id}.overlay.png"
        return path if item_id in self._items and path.is_file() else None

    def label(self, item_id: str, label: str, reviewer: str) -> ReviewItem:
        """Record a reviewer's label (written to the sink, kept with the item)."""
        if not isinstance(label, str) or label not in self.labels:
            raise RequestError(422, f"label {label!r} is not one of {', '.join(self.labels)}. "
                                    "Fix: send one of them.")
        reviewer = (reviewer or "").strip() or "anonymous"
        with self._lock:
            item = self._items.get(item_id)
        if item is None:
            raise RequestError(404, f"review item {item_id!r} is not in the queue (removed or never added). "
                                    "Fix: reload the review page.")
        self.sink.record(item.image_path, label, reviewer)
        item.label, item.reviewer = label, reviewer
        self._write(item)
        return item

    def _write(self, item: ReviewItem) -> None:
        path = self.items_dir / f"{item.id}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(asdict(item)), encoding="utf-8")
        os.replace(tmp, path)  # the JSON is whole or absent, never half-written

    def _remove_files(self, item: ReviewItem) -> None:
        for path in self.items_dir.glob(f"{item.id}*"):
            path.unlink(missing_ok=True)

