"""The labelling store: one SQLite file with the pool, the classes, every label ever given, the rounds
that asked for labels and the models that ranked them, and the files imported.

Every change runs in one transaction (BEGIN IMMEDIATE ... COMMIT), so an interrupted command leaves
the store as it was before it, and two commands never interleave. Labels are never updated or
deleted: a new label for an image is a new row and the image's current label is its latest row; a
label equal to the image's current label (same class and mask) is not written again, so re-importing
a file, or a later export that repeats earlier annotations, adds nothing.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from defectmine.data.records import ANOMALOUS, NORMAL
from defectmine.errors import DataError

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE images(id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, height INTEGER NOT NULL,
    width INTEGER NOT NULL, added_at TEXT NOT NULL, added_by TEXT NOT NULL);
CREATE TABLE models(id INTEGER PRIMARY KEY, path TEXT NOT NULL, weights_sha256 TEXT NOT NULL,
    registered_at TEXT NOT NULL, UNIQUE(path, weights_sha256));
CREATE TABLE rounds(id INTEGER PRIMARY KEY, strategy TEXT NOT NULL, model_id INTEGER REFERENCES models(id),
    size INTEGER NOT NULL, seed INTEGER NOT NULL, created_at TEXT NOT NULL, created_by TEXT NOT NULL);
CREATE TABLE round_images(round_id INTEGER NOT NULL REFERENCES rounds(id),
    image_id INTEGER NOT NULL REFERENCES images(id), rank INTEGER NOT NULL, score REAL,
    PRIMARY KEY(round_id, image_id));
CREATE TABLE imports(id INTEGER PRIMARY KEY, sha256 TEXT NOT NULL UNIQUE, file TEXT NOT NULL,
    format TEXT NOT NULL, n_labels INTEGER NOT NULL, imported_at TEXT NOT NULL, imported_by TEXT NOT NULL);
CREATE TABLE labels(id INTEGER PRIMARY KEY, image_id INTEGER NOT NULL REFERENCES images(id),
    label TEXT NOT NULL CHECK(label IN ('normal', 'anomalous')), defect_class TEXT NOT NULL,
    mask BLOB, content_sha256 TEXT NOT NULL, import_id INTEGER REFERENCES imports(id),
    annotator TEXT NOT NULL, labelled_at TEXT NOT NULL);
CREATE INDEX labels_image ON labels(image_id, id);
"""


def now() -> str:
    """UTC time of day as ISO 8601 (seconds): what the store records as 'when'."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class PoolImage:
    """One image of the pool: its id in the store, absolute path and size in pixels."""

    id: int
    path: str
    height: int
    width: int


@dataclass(frozen=True)
class NewLabel:
    """A label to add: normal (mask None or all 0) or anomalous of `defect_class`, with an optional
    class-index mask (uint8, the image's height x width, 0 = background, i = the project's class i)."""

    image_id: int
    label: str
    defect_class: str = ""
    mask: np.ndarray | None = None
    annotator: str = ""
    labelled_at: str = ""

    def content_sha256(self) -> str:
        digest = hashlib.sha256(f"{self.label}|{self.defect_class}|".encode())
        if self.mask is not None:
            digest.update(f"{self.mask.shape}".encode())
            digest.update(np.ascontiguousarray(self.mask, dtype=np.uint8).tobytes())
        return digest.hexdigest()


@dataclass(frozen=True)
class CurrentLabel:
    """An image's latest label as stored."""

    image_id: int
    label: str
    defect_class: str
    mask: np.ndarray | None
    annotator: str
    labelled_at: str


class LabelStore:
    """The SQLite store of one labelling project (see the module docstring)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"{self.path}: no labelling store here. Fix: run `defectmine label init` first.")
        self._connect()
        try:
            version = int(self._meta("schema_version"))
        except (sqlite3.DatabaseError, TypeError, ValueError):
            self.close()
            raise DataError(f"{self.path}: not a defectmine labelling store (or a damaged one). "
                            "Fix: point --project at the folder `defectmine label init` created.") from None
        if version != SCHEMA_VERSION:
            self.close()
            raise DataError(f"{self.path}: store schema {version}, this defectmine reads {SCHEMA_VERSION}. "
                            "Fix: use the defectmine version that created it.")

    def _connect(self) -> None:
        # isolation_level=None: we issue BEGIN / COMMIT ourselves (see transaction()).
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA foreign_keys = ON")

    @classmethod
    def create(cls, path: Path | str, classes: list[str]) -> "LabelStore":
        """A new, empty store with these defect classes (refused when the file exists)."""
        path = Path(path)
        if path.exists():
            raise DataError(f"{path}: a store exists already. Fix: open it (`LabelStore(path)`).")
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.unlink(missing_ok=True)
        db = sqlite3.connect(partial)
        with db:
            db.executescript(SCHEMA)
            db.executemany("INSERT INTO meta VALUES (?, ?)", [("schema_version", str(SCHEMA_VERSION)),
                                                               ("classes", json.dumps(list(classes)))])
        db.close()
        partial.rename(path)  # the store appears whole or not at all
        return cls(path)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "LabelStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self):
        """All statements inside are applied together or not at all (an exception rolls back)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    # classes ---------------------------------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        """The project's defect classes in order; a mask value i (>= 1) is class classes[i - 1]."""
        return json.loads(self._meta("classes"))

    def add_classes(self, names: list[str]) -> list[str]:
        """Append the classes not there yet (order kept: stored masks keep their meaning); the new ones."""
        current = self.classes
        new = [n for n in dict.fromkeys(names) if n not in current]
        if new:
            with self.transaction() as db:
                db.execute("UPDATE meta SET value = ? WHERE key = 'classes'", (json.dumps(current + new),))
        return new

    # pool ------------------------------------------------------------------------------------------
    def add_images(self, images: list[tuple[str, int, int]], who: str) -> int:
        """Add (absolute path, height, width) entries not in the pool yet; returns how many were new."""
        when = now()
        with self.transaction() as db:
            before = db.total_changes
            db.executemany("INSERT OR IGNORE INTO images(path, height, width, added_at, added_by) "
                           "VALUES (?, ?, ?, ?, ?)", [(p, h, w, when, who) for p, h, w in images])
            return db.total_changes - before

    def images(self) -> list[PoolImage]:
        """Every pool image, in id order."""
        return [PoolImage(*row) for row in self.db.execute("SELECT id, path, height, width FROM images ORDER BY id")]

    def image(self, path: str) -> PoolImage | None:
        """The pool image with this absolute path, or None."""
        row = self.db.execute("SELECT id, path, height, width FROM images WHERE path = ?", (path,)).fetchone()
        return PoolImage(*row) if row else None

    def unlabelled(self) -> list[PoolImage]:
        """Pool images without any label, in id order."""
        rows = self.db.execute("SELECT id, path, height, width FROM images WHERE id NOT IN "
                               "(SELECT image_id FROM labels) ORDER BY id")
        return [PoolImage(*row) for row in rows]

    # labels ----------------------------------------------------------------------------------------
    def current_labels(self) -> dict[int, CurrentLabel]:
        """image id -> its latest label."""
        rows = self.db.execute(
            "SELECT image_id, label, defect_class, mask, annotator, labelled_at FROM labels WHERE id IN "
            "(SELECT MAX(id) FROM labels GROUP BY image_id) ORDER BY image_id")
        return {row[0]: CurrentLabel(row[0], row[1], row[2], _mask_from_png(row[3]), row[4], row[5]) for row in rows}

    def imported(self, sha256: str) -> bool:
        """Whether a file with this content was imported before."""
        return self.db.execute("SELECT 1 FROM imports WHERE sha256 = ?", (sha256,)).fetchone() is not None

    def apply_import(self, sha256: str, file: str, fmt: str, labels: list[NewLabel], who: str) -> tuple[int, int]:
        """Record an import and its labels in one transaction; (labels written, labels already current).

        A file imported before (same content) changes nothing and returns (0, len(labels))."""
        with self.transaction() as db:
            if self.imported(sha256):
                return 0, len(labels)
            latest = {row[0]: row[1] for row in db.execute(
                "SELECT image_id, content_sha256 FROM labels WHERE id IN (SELECT MAX(id) FROM labels GROUP BY image_id)")}
            import_id = db.execute(
                "INSERT INTO imports(sha256, file, format, n_labels, imported_at, imported_by) VALUES (?, ?, ?, 0, ?, ?)",
                (sha256, file, fmt, now(), who)).lastrowid
            written = 0
            for label in labels:
                content = label.content_sha256()
                if latest.get(label.image_id) == content:
                    continue
                _insert_label(db, label, content, import_id, who)
                latest[label.image_id] = content
                written += 1
            db.execute("UPDATE imports SET n_labels = ? WHERE id = ?", (written, import_id))
        return written, len(labels) - written

    # rounds and models -----------------------------------------------------------------------------
    def add_round(self, strategy: str, entries: list[tuple[int, float | None]], *, seed: int, who: str,
                  model: tuple[str, str] | None = None) -> int:
        """Record a batch asked for labels: (image id, score) in rank order, and the model (path, weights
        sha256) that ranked it; returns the round number."""
        with self.transaction() as db:
            model_id = None
            if model is not None:
                db.execute("INSERT OR IGNORE INTO models(path, weights_sha256, registered_at) VALUES (?, ?, ?)",
                           (*model, now()))
                model_id = db.execute("SELECT id FROM models WHERE path = ? AND weights_sha256 = ?", model).fetchone()[0]
            round_id = db.execute(
                "INSERT INTO rounds(strategy, model_id, size, seed, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?)",
                (strategy, model_id, len(entries), seed, now(), who)).lastrowid
            db.executemany("INSERT INTO round_images VALUES (?, ?, ?, ?)",
                           [(round_id, image_id, rank, score) for rank, (image_id, score) in enumerate(entries)])
        return round_id

    def next_round_number(self) -> int:
        return (self.db.execute("SELECT MAX(id) FROM rounds").fetchone()[0] or 0) + 1

    def counts(self) -> dict:
        """Numbers for `label status`: pool, labelled (normal, per class), rounds, imports, models."""
        labels = self.current_labels().values()
        per_class: dict[str, int] = {c: 0 for c in self.classes}
        for label in labels:
            if label.label == ANOMALOUS:
                per_class[label.defect_class] = per_class.get(label.defect_class, 0) + 1
        one = lambda sql: self.db.execute(sql).fetchone()[0]  # noqa: E731
        return {
            "pool": one("SELECT COUNT(*) FROM images"),
            "labelled": len(labels),
            "normal": sum(label.label == NORMAL for label in labels),
            "anomalous": per_class,
            "with_mask": sum(label.mask is not None and bool(label.mask.any()) for label in labels),
            "label_rows": one("SELECT COUNT(*) FROM labels"),
            "rounds": one("SELECT COUNT(*) FROM rounds"),
            "imports": one("SELECT COUNT(*) FROM imports"),
            "models": one("SELECT COUNT(*) FROM models"),
            "last_import": self.db.execute("SELECT file, imported_at, imported_by FROM imports "
                                           "ORDER BY id DESC LIMIT 1").fetchone(),
        }


def _insert_label(db: sqlite3.Connection, label: NewLabel, content: str, import_id: int, who: str) -> None:
    """One label row (a separate function so that tests can interrupt an import half-way)."""
    db.execute(
        "INSERT INTO labels(image_id, label, defect_class, mask, content_sha256, import_id, annotator, labelled_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (label.image_id, label.label, label.defect_class, _mask_to_png(label.mask), content, import_id,
         label.annotator or who, label.labelled_at or now()))


def _mask_to_png(mask: np.ndarray | None) -> bytes | None:
    if mask is None:
        return None
    ok, data = cv2.imencode(".png", np.ascontiguousarray(mask, dtype=np.uint8))
    return data.tobytes()


def _mask_from_png(data: bytes | None) -> np.ndarray | None:
    if data is None:
        return None
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
