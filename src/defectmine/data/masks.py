"""Ground-truth masks as class-index maps, and the class list they index.

A dataset's classes are `("background", *defect classes)`: index 0 is background, then the sorted
distinct `defect_class` of its anomalous records (`class_list`). A mask file is read in one of two ways:

- binary: black background and defect pixels, whose class is the record's own `defect_class`.
  Defect pixels are the 1s of a 0/1 mask, the whites of a 0/255 (16-bit: 0/65535) mask, otherwise the
  pixels above `threshold` (127: absorbs compression noise in JPEG-ish masks). In colour masks the
  brightest channel counts, so pure red (255, 0, 0) is a defect pixel.
- class indices: a palette ("P") or single-channel mask whose values all lie in 0..C-1 (C = number of
  classes, background included); each value is the index of a class in the dataset's list.

The rule, in order: only 0 and 1, or only 0 and white -> binary; palette, or single channel with all
values < C -> class indices; otherwise values above `threshold` -> binary (unless more than a quarter
of the pixels are mid-gray: an image, not a mask); anything else (e.g. gray values beyond the class
count and none above the threshold, palette indices beyond the class count) is refused with a
DataError that names the file and the values found, never read as a silently wrong mask. A normal
image's mask must mark no defect pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from defectmine.errors import DataError
from defectmine.data._messages import listing
from defectmine.data.pixels import COLOUR, GRAY16, PALETTE, UnreadableFileError, read_mask_values, scale_16bit
from defectmine.data.records import ANOMALOUS, Record

BACKGROUND = "background"
DEFAULT_THRESHOLD = 127
# A binary mask is black and (near) white; mid-gray pixels appear only at edges and from compression.
_MID_GRAY = (32, 223)
_MAX_MID_GRAY_FRACTION = 0.25


def record_class(record: Record) -> str:
    """The class name of a record: "" for normal images, its defect_class (or "anomalous") otherwise."""
    if not record.is_anomalous:
        return ""
    return record.defect_class or ANOMALOUS


def class_list(records: Sequence[Record]) -> tuple[str, ...]:
    """("background", *sorted distinct classes of the anomalous records)."""
    names = sorted({record_class(r) for r in records if r.is_anomalous})
    if BACKGROUND in names:
        raise DataError(
            f"defect class {BACKGROUND!r} is reserved for index 0 (defect-free pixels). "
            "Fix: rename that class (its folder or its defect_class column)."
        )
    return (BACKGROUND, *names)


def check_classes(classes: Sequence[str]) -> tuple[str, ...]:
    """A validated class list: strings, no repeats, "background" first."""
    if isinstance(classes, str):
        classes = (classes,)
    classes = tuple(classes)
    if not classes or classes[0] != BACKGROUND or not all(isinstance(c, str) and c for c in classes):
        raise DataError(
            f"classes={classes!r} is invalid. Fix: pass ({BACKGROUND!r}, class, ...): non-empty names, "
            f"{BACKGROUND!r} first, e.g. from class_list(records)."
        )
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise DataError(f"classes={classes!r} names {', '.join(repeated)} twice. Fix: list each class once.")
    return classes


def class_indices(records: Sequence[Record], classes: Sequence[str]) -> list[int]:
    """Index in `classes` of every record's class (0 for normal images).

    Raises DataError listing every anomalous record whose class is not in `classes`.
    """
    position = {name: i for i, name in enumerate(classes)}
    missing = [r for r in records if r.is_anomalous and record_class(r) not in position]
    if missing:
        lines = [f"{r.path}: class {record_class(r)!r}" for r in missing]
        raise DataError(
            f"{len(missing)} image(s) have a defect class that is not in classes={tuple(classes)!r}:\n"
            f"{listing(lines)}\nFix: build the class list from every split (class_list(all records)) "
            "and pass it to each dataset, or relabel these images."
        )
    return [position[record_class(r)] if r.is_anomalous else 0 for r in records]


def class_dtype(n_classes: int) -> np.dtype:
    """uint8 up to 256 classes, int16 beyond: class masks stay compact in memory."""
    return np.dtype(np.uint8) if n_classes <= 256 else np.dtype(np.int16)


def _shown(values: np.ndarray, limit: int = 8) -> str:
    shown = ", ".join(str(int(v)) for v in values[:limit])
    return f"{shown}, ... ({values.size} distinct values)" if values.size > limit else shown


def mask_classes(
    values: np.ndarray,
    kind: str,
    class_index: int,
    classes: Sequence[str],
    *,
    threshold: int = DEFAULT_THRESHOLD,
    source: Path | str = "mask",
) -> np.ndarray:
    """Class indices (HxW, uint8 or int16) of mask values from `read_mask_values`.

    Binary masks give `class_index` on defect pixels; class-index masks keep their values (see the
    module docstring for the rule). Raises `UnreadableFileError` (a DataError) naming `source` when the
    values are neither, or when a normal image's mask (class_index 0) marks defect pixels.
    """
    n = len(classes)
    dtype = class_dtype(n)
    plane = values.max(axis=2) if kind == COLOUR else values
    found = np.unique(plane)
    if not _black_and_white(found) and kind != COLOUR and found.min() >= 0 and found.max() < n:
        out = plane.astype(dtype)  # class indices, kept as they are
        defect = out != 0
    else:
        defect = _defect_pixels(plane, found, kind, classes, threshold, source)
        out = defect.astype(dtype) * dtype.type(class_index)
    if class_index == 0 and defect.any():
        raise UnreadableFileError(
            source,
            "mask",
            f"it marks {np.count_nonzero(defect)} defect pixel(s) but its image is labelled normal",
            fix="label the image anomalous (with its defect class), or clear its mask",
        )
    return out


def _black_and_white(found: np.ndarray) -> bool:
    """Distinct values 0 and at most one of 1, 255 (8-bit white) or 65535 (16-bit white)."""
    return found.size <= 2 and found.min() == 0 and found.max() in (0, 1, 255, 65535)


def _defect_pixels(
    plane: np.ndarray, found: np.ndarray, kind: str, classes: Sequence[str], threshold: int, source: Path | str
) -> np.ndarray:
    """bool defect pixels of a mask read as binary, or UnreadableFileError when it is not one."""
    n = len(classes)
    if _black_and_white(found):
        return plane != 0  # no threshold needed
    if kind == PALETTE:
        raise UnreadableFileError(
            source,
            "mask",
            f"palette indices {_shown(found)} go beyond the {n} classes {', '.join(classes)}",
            fix=f"save palette indices 0..{n - 1} in the order of that list, or a black/white (mode L) mask",
        )
    gray = scale_16bit(plane) if kind == GRAY16 else plane
    if gray.max() <= threshold:
        raise UnreadableFileError(
            source,
            "mask",
            f"its values {_shown(found)} are neither a binary mask (0 and 1, or defect pixels above "
            f"{threshold}) nor class indices 0..{n - 1} of the classes {', '.join(classes)}",
            fix=f"save defects white (255) on black, or class indices 0..{n - 1} in the order of that list",
        )
    mid = np.count_nonzero((gray >= _MID_GRAY[0]) & (gray <= _MID_GRAY[1]))
    if found.size > 2 and mid > _MAX_MID_GRAY_FRACTION * gray.size:
        raise UnreadableFileError(
            source,
            "mask",
            f"{100 * mid / gray.size:.0f}% of its pixels are mid-gray ({_shown(found)}): an image, not a binary mask",
            fix="check that the mask column or masks/ folder points at masks, and save defects white on black",
        )
    return gray > threshold


def read_class_mask(
    path: Path | str, class_index: int, classes: Sequence[str], threshold: int = DEFAULT_THRESHOLD
) -> np.ndarray:
    """Class indices (HxW uint8, int16 beyond 256 classes) of a mask file for a record of class
    `classes[class_index]` (0 for normal images). Raises DataError naming the file if it cannot be read
    or is neither a binary nor a class-index mask (module docstring)."""
    values, kind = read_mask_values(path)
    return mask_classes(values, kind, class_index, classes, threshold=threshold, source=path)


def read_mask(path: Path | str, threshold: int = DEFAULT_THRESHOLD) -> np.ndarray:
    """A ground-truth mask as bool HxW: True on defect pixels.

    Defect pixels are the 1s of a 0/1 mask, otherwise the pixels above `threshold` (the brightest
    channel of colour masks: red counts); the threshold absorbs compression noise in masks that are not
    strictly binary (JPEG-ish PNGs). Multi-class masks: use `read_class_mask`.
    """
    return read_class_mask(path, 1, (BACKGROUND, ANOMALOUS), threshold) > 0
