"""The review page's labels into a labelling project: `StoreLabelSink` is the `serve.LabelSink` that
writes each decision of `defectmine serve --label-project DIR` into the project's SQLite store, so that
`defectmine label status / export` see them beside the labels imported from Label Studio or COCO."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from defectmine.errors import DataError
from defectmine.labelling.loop import image_size, open_store
from defectmine.labelling.store import NewLabel, now

NORMAL = "normal"
ANOMALOUS = "anomalous"


class StoreLabelSink:
    """Records review labels in the store of the labelling project `project` (made by `label init`).

    An image not in the project's pool yet is added to it first; a label names "normal", "anomalous"
    (no class) or one of the project's defect classes; any other class is a DataError and nothing is
    written. Each decision is its own transaction (one "review" import), so a crash never half-applies it.
    """

    def __init__(self, project: Path | str) -> None:
        self.project = Path(project)
        with open_store(self.project) as store:  # fails now, naming the folder, when there is no project
            self.classes = store.classes
        self._lock = threading.Lock()

    def record(self, image_id: str, label: str, reviewer: str) -> None:
        path = str(Path(image_id).expanduser().resolve())
        if label not in (NORMAL, ANOMALOUS) and label not in self.classes:
            raise DataError(f"label {label!r} for {path} is not a class of the labelling project {self.project} "
                            f"(classes: {', '.join(self.classes) or 'none'}). Fix: pick one of them, or add it to "
                            "the project.")
        with self._lock, open_store(self.project) as store:
            image = store.image(path)
            if image is None:
                store.add_images([(path, *image_size(path))], who=reviewer)
                image = store.image(path)
            when = now()
            new = NewLabel(image.id, NORMAL if label == NORMAL else ANOMALOUS,
                           "" if label in (NORMAL, ANOMALOUS) else label, None, reviewer, when)
            digest = hashlib.sha256(f"review|{path}|{label}|{reviewer}|{when}|{threading.get_ident()}".encode())
            store.apply_import(digest.hexdigest(), "review page", "review", [new], who=reviewer)
