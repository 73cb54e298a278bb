"""Reading what labellers send back: Label Studio JSON exports and COCO files, as `Annotation`s.

Nothing here touches the store: a file is read and checked whole, and every problem is reported at
once (`loop.import_file` then applies all of it in one transaction, or none of it).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from defectmine.data._messages import listing
from defectmine.errors import DataError
from defectmine.labelling.brush import rle_to_mask
from defectmine.labelling.coco import decode_segmentation

FORMATS = ("auto", "labelstudio", "coco")
NORMAL_CHOICES = ("normal", "ok", "good", "defect-free", "no defect")


@dataclass
class Annotation:
    """One image's annotation as a file gives it: which image (`image_id` when the file carries our id,
    else `image` as the file names it), its declared size, and defect regions (class, bool mask) and/or
    image-level choices. No region and no class choice means: a defect-free image."""

    where: str  # e.g. "export.json, task 3" for messages
    image_id: int | None
    image: str
    height: int | None
    width: int | None
    regions: list[tuple[str, np.ndarray]] = field(default_factory=list)
    choices: list[str] = field(default_factory=list)
    annotator: str = ""
    labelled_at: str = ""


@dataclass
class ParsedFile:
    """A whole file read: its annotations, its format and content hash, and how many tasks had none."""

    path: Path
    format: str
    sha256: str
    annotations: list[Annotation]
    without_annotation: int = 0


def read_export(path: Path | str, fmt: str = "auto") -> ParsedFile:
    """Read a Label Studio JSON export (a list of tasks) or a COCO file (a dict with images,
    annotations, categories). Raises one DataError naming the file for a half-written file, an unknown
    format, or all the broken entries at once."""
    path = Path(path).expanduser()
    if fmt not in FORMATS:
        raise DataError(f"--format {fmt!r} is unknown. Fix: use one of {', '.join(FORMATS)}.")
    if not path.is_file():
        raise DataError(f"{path}: file not found. Fix: pass a Label Studio JSON export or a COCO .json file.")
    raw = path.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        cut = isinstance(err, json.JSONDecodeError) and err.pos >= len(raw.rstrip()) - 1
        why = "it ends in the middle (a half-written or cut-off file)" if cut else f"it is not valid JSON ({err})"
        raise DataError(f"{path}: {why}; nothing was imported. Fix: export the file again and wait "
                        "until the download is complete.") from None
    found = "labelstudio" if isinstance(data, list) else "coco" if isinstance(data, dict) and "images" in data else None
    if found is None or (fmt != "auto" and fmt != found):
        raise DataError(f"{path}: not a {'Label Studio JSON export or COCO file' if fmt == 'auto' else fmt} file "
                        "(a Label Studio export is a JSON list of tasks; a COCO file an object with images, "
                        "annotations and categories). Fix: export as 'JSON' or 'COCO' from Label Studio.")
    problems: list[str] = []
    if found == "labelstudio":
        annotations, skipped = _labelstudio(data, path.name, problems)
    else:
        annotations, skipped = _coco(data, path.name, problems), 0
    if problems:
        raise DataError(f"{path}: {len(problems)} problem(s); nothing was imported:\n{listing(problems)}\n"
                        "Fix: correct these entries (or export again) and re-run the import.")
    return ParsedFile(path, found, hashlib.sha256(raw).hexdigest(), annotations, skipped)


def _labelstudio(tasks: list, name: str, problems: list[str]) -> tuple[list[Annotation], int]:
    annotations, skipped = [], 0
    for i, task in enumerate(tasks):
        where = f"{name}, task {task.get('id', i) if isinstance(task, dict) else i}"
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            problems.append(f"{where}: not a task (an object with 'data')")
            continue
        done = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
        if not done:
            skipped += 1
            continue
        latest = max(done, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id") or 0))
        data = task["data"]
        image_id = data.get("defectmine_id")
        annotation = Annotation(where, int(image_id) if isinstance(image_id, int) else None, str(data.get("image", "")),
                                None, None, annotator=_who(latest.get("completed_by")),
                                labelled_at=str(latest.get("updated_at") or latest.get("created_at") or ""))
        for k, result in enumerate(latest.get("result") or []):
            _labelstudio_result(result, f"{where}, result {k}", annotation, problems)
        annotations.append(annotation)
    return annotations, skipped


def _labelstudio_result(result: dict, where: str, annotation: Annotation, problems: list[str]) -> None:
    kind = str(result.get("type", "")).lower() if isinstance(result, dict) else ""
    value = result.get("value") if isinstance(result, dict) else None
    if kind == "choices" and isinstance(value, dict):
        annotation.choices += [str(c) for c in value.get("choices") or []]
        return
    if kind != "brushlabels" or not isinstance(value, dict):
        problems.append(f"{where}: result type {kind or '?'!r} is not read (use BrushLabels for defect masks "
                        "and Choices for image-level labels)")
        return
    try:
        height, width = int(result["original_height"]), int(result["original_width"])
    except (KeyError, TypeError, ValueError):
        problems.append(f"{where}: no original_width / original_height")
        return
    if annotation.height is not None and (annotation.height, annotation.width) != (height, width):
        problems.append(f"{where}: {width}x{height} while another region of this task is "
                        f"{annotation.width}x{annotation.height}")
        return
    annotation.height, annotation.width = height, width
    labels = value.get("brushlabels") or ["?"]
    try:
        mask = rle_to_mask(value.get("rle") or result.get("rle"), height, width, source=where)
    except DataError as err:
        problems.append(str(err))
        return
    annotation.regions += [(str(labels[0]), mask)]


def _who(completed_by) -> str:
    if isinstance(completed_by, dict):
        return str(completed_by.get("email") or completed_by.get("id") or "")
    return "" if completed_by is None else f"label studio user {completed_by}"


def _coco(data: dict, name: str, problems: list[str]) -> list[Annotation]:
    try:
        categories = {c["id"]: str(c["name"]) for c in data.get("categories") or []}
        images = {im["id"]: Annotation(f"{name}, image {im['id']} ({im['file_name']})", None, str(im["file_name"]),
                                       int(im["height"]), int(im["width"])) for im in data["images"]}
    except (KeyError, TypeError, ValueError) as err:
        problems.append(f"images / categories: an entry lacks {err} (images need id, file_name, width, height; "
                        "categories id and name)")
        return []
    for k, ann in enumerate(data.get("annotations") or []):
        where = f"{name}, annotation {ann.get('id', k) if isinstance(ann, dict) else k}"
        if not isinstance(ann, dict) or ann.get("image_id") not in images:
            problems.append(f"{where}: image_id {ann.get('image_id') if isinstance(ann, dict) else '?'} "
                            "is not in the file's images")
            continue
        if ann.get("category_id") not in categories:
            problems.append(f"{where}: category_id {ann.get('category_id')} is not in the file's categories")
            continue
        image = images[ann["image_id"]]
        try:
            mask = decode_segmentation(ann.get("segmentation"), image.height, image.width, source=where)
        except DataError as err:
            problems.append(str(err))
            continue
        image.regions.append((categories[ann["category_id"]], mask))
    return list(images.values())
