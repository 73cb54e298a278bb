"""Datasets laid out as folders: normal/, anomalous/<defect_class>/, optional masks/."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from defectmine.errors import DataError
from defectmine.data._messages import listing
from defectmine.data.images import IMAGE_SUFFIXES
from defectmine.data.records import ANOMALOUS, NORMAL, Record

log = logging.getLogger(__name__)

LAYOUT = """\
  <root>/
    normal/**/*.png|jpg|...             defect-free images (any sub-folders)
    anomalous/<defect_class>/**/*.png   defective images, one sub-folder per defect class
                                        (images directly in anomalous/ get class "anomalous")
    masks/<same relative path>.png      optional ground-truth masks, e.g. masks/anomalous/crack/a.png
                                        for anomalous/crack/a.jpg"""

MASKS = "masks"


def is_image_file(path: Path) -> bool:
    """True for files with an image suffix (.png .jpg .jpeg .bmp .tif .tiff, any case)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def is_hidden(relative_path: Path | str) -> bool:
    """True if any part of a path (relative to the folder being scanned) is hidden: starts with "." or
    is a macOS "__MACOSX" folder. Such files (.ipynb_checkpoints/, ._a.jpg, __MACOSX/ from unzipping)
    are copies or metadata, not data, and are ignored when scanning for images."""
    return any(part.startswith(".") or part == "__MACOSX" for part in Path(relative_path).parts)


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if not is_hidden(p.relative_to(folder)) and is_image_file(p))


def scan_folder(root: Path | str) -> list[Record]:
    """Records of every image in a folder dataset, normals first, then anomalies by class; sorted.

    Layout (masks/ is optional and mirrors the image paths with a .png suffix):

        root/normal/**              label "normal"
        root/anomalous/<class>/**   label "anomalous", defect_class = <class>
        root/anomalous/*.png        label "anomalous", defect_class = "anomalous"
        root/masks/anomalous/<class>/<name>.png

    Hidden files and folders (`is_hidden`: names starting with ".", `__MACOSX`) are ignored. Raises
    DataError for a missing root or normal/ folder, a class folder without images, or a mask without an
    image.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise DataError(f"{root}: dataset folder {what}. Fix: pass a folder laid out as\n{LAYOUT}")
    root = root.resolve()
    normal_dir = root / NORMAL
    if not normal_dir.is_dir():
        found = sorted(p.name + "/" for p in root.iterdir() if p.is_dir())
        raise DataError(
            f"{root}: no '{NORMAL}/' folder (found: {', '.join(found) or 'no folders'}). "
            f"Fix: put defect-free images in {normal_dir}/ so the folder is laid out as\n{LAYOUT}"
        )
    records: list[Record] = []
    normals = _images_under(normal_dir)
    if not normals:
        raise DataError(f"{normal_dir}: no images (.png .jpg .jpeg .bmp .tif .tiff). Fix: add the defect-free images.")
    records += [Record(path=p, label=NORMAL) for p in normals]

    anomalous_dir = root / ANOMALOUS
    if anomalous_dir.is_dir():
        records += _scan_anomalous(anomalous_dir)

    known = (NORMAL, ANOMALOUS, MASKS)
    unknown = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in known and not is_hidden(p.name))
    if unknown:
        log.warning("%s: ignoring folder(s) %s; only normal/, anomalous/ and masks/ are read", root, ", ".join(unknown))
    return _attach_masks(root, records)


def _scan_anomalous(anomalous_dir: Path) -> list[Record]:
    records = [
        Record(path=p, label=ANOMALOUS, defect_class=ANOMALOUS)
        for p in sorted(anomalous_dir.iterdir())
        if not is_hidden(p.name) and is_image_file(p)
    ]
    class_dirs = sorted(p for p in anomalous_dir.iterdir() if p.is_dir() and not is_hidden(p.name))
    for class_dir in class_dirs:
        images = _images_under(class_dir)
        if not images:
            raise DataError(
                f"{class_dir}: defect class folder '{class_dir.name}' has no images. "
                "Fix: add its images or remove the empty folder."
            )
        records += [Record(path=p, label=ANOMALOUS, defect_class=class_dir.name) for p in images]
    if not records:
        raise DataError(
            f"{anomalous_dir}: no images. Fix: add defective images under anomalous/<defect_class>/, "
            "or remove the empty anomalous/ folder to train on normal images only."
        )
    return records


def _attach_masks(root: Path, records: list[Record]) -> list[Record]:
    masks_dir = root / MASKS
    if not masks_dir.is_dir():
        return records
    expected = {masks_dir / r.path.relative_to(root).with_suffix(".png"): i for i, r in enumerate(records)}
    orphans = []
    for mask in _images_under(masks_dir):
        i = expected.get(mask)
        if i is None:
            orphans.append(mask)
        else:
            records[i] = replace(records[i], mask=mask)
    if orphans:
        raise DataError(
            f"{len(orphans)} mask(s) under {masks_dir} have no image:\n{listing([str(p) for p in orphans])}\n"
            "Fix: masks must mirror an image's path with a .png suffix (masks/anomalous/crack/a.png for "
            "anomalous/crack/a.jpg); rename or remove these."
        )
    return records
