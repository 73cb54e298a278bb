"""What `predict` reads: every image under `--data` (or in a manifest) listed once, then decoded one
file at a time, so memory does not grow with the number of images.

Listing rules (a folder):
- every file with an image suffix, in any sub-folder, symlinked folders followed (a link back up
  the tree is not walked twice); sorted by path relative to the folder;
- labels from the normal/anomalous layout where it applies: ``normal/**`` is "normal",
  ``anomalous/<class>/**`` is "anomalous" of that class (``anomalous/*.png`` of class "anomalous");
  every other image is "unlabelled". When the layout is there, ``masks/`` holds ground truth, not
  images to inspect, and is not listed;
- hidden files and folders (a path part starting with ".") and ``__MACOSX`` are metadata, not images;
- two paths to the same real file (a symlink) are scored once, under the first path that carries a
  label from the layout (else the first path); the others are returned as duplicates so that the
  caller can account for them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from defectmine.data import read_manifest
from defectmine.data.folder import is_hidden
from defectmine.data.images import (
    IMAGE_SUFFIXES,
    ImageSpec,
    UnreadableFileError,
    content_geometry,
    prepare_image,
    read_image,
)
from defectmine.data.records import ANOMALOUS, NORMAL
from defectmine.errors import DataError
from defectmine.explain.overlay import display_size

UNLABELLED = "unlabelled"
MASKS = "masks"


@dataclass(frozen=True)
class PredictInput:
    """One image to score: its path as listed (absolute, symlinks not resolved), label and defect class."""

    path: str
    label: str = UNLABELLED
    defect_class: str = ""


@dataclass
class Listing:
    """The images to score, and the paths left out because they name a file already listed."""

    items: list[PredictInput]
    duplicates: list[tuple[str, str]]  # (path, the listed path of the same real file)


def list_inputs(data: str | Path, *, exclude: Path | None = None) -> Listing:
    """The images `predict` scores: a folder (see the module docstring), a CSV manifest (its rows,
    labels from it) or one image file. `exclude` is a folder never listed (the output's overlays/,
    when --out lies inside --data)."""
    path = Path(data).expanduser()
    if path.suffix.lower() == ".csv":
        records = read_manifest(path)
        items = [PredictInput(os.path.abspath(r.path), r.label, r.defect_class) for r in records]
    elif path.is_file():
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(f"{path}: not an image file or CSV manifest. Fix: pass a folder of images, a CSV "
                            f"manifest, or one image ({', '.join(IMAGE_SUFFIXES)}).")
        items = [PredictInput(os.path.abspath(path))]
    elif path.is_dir():
        items = _folder_inputs(Path(os.path.abspath(path)), exclude)
    else:
        raise DataError(f"{path}: no such folder, manifest or image. Fix: pass a folder of images (any layout), "
                        "a CSV manifest with a path column, or one image file.")
    if not items:
        raise DataError(f"{path}: no images found (looked for {', '.join(IMAGE_SUFFIXES)} in every sub-folder, "
                        "hidden ones and __MACOSX left out).")
    return _without_duplicates(items)


def _folder_inputs(root: Path, exclude: Path | None) -> list[PredictInput]:
    layout = (root / NORMAL).is_dir() or (root / ANOMALOUS).is_dir()
    skip = {os.path.realpath(exclude)} if exclude is not None else set()
    if layout:
        skip.add(os.path.realpath(root / MASKS))
    paths = sorted(_walk(str(root), skip, frozenset({os.path.realpath(root)})),
                   key=lambda p: Path(p).relative_to(root).parts)
    return [_labelled(p, Path(p).relative_to(root).parts, layout) for p in paths]


def _walk(folder: str, skip: set[str], ancestors: frozenset[str]):
    """Image paths under `folder`, following symlinked folders except those that point back up the tree
    (a loop) or into `skip`. A broken link with an image suffix is listed: it is reported unreadable."""
    try:
        entries = list(os.scandir(folder))
    except OSError as err:
        raise DataError(f"{folder}: cannot list this folder ({err.strerror}). Fix: check its permissions.") from None
    for entry in entries:
        if is_hidden(entry.name):
            continue
        if entry.is_dir():
            real = os.path.realpath(entry.path)
            if real not in ancestors and real not in skip:
                yield from _walk(entry.path, skip, ancestors | {real})
        elif entry.name.lower().endswith(IMAGE_SUFFIXES):
            yield entry.path


def _labelled(path: str, parts: tuple[str, ...], layout: bool) -> PredictInput:
    if layout and len(parts) > 1 and parts[0] == NORMAL:
        return PredictInput(path, NORMAL)
    if layout and len(parts) > 1 and parts[0] == ANOMALOUS:
        return PredictInput(path, ANOMALOUS, ANOMALOUS if len(parts) == 2 else parts[1])
    return PredictInput(path)


def _without_duplicates(items: list[PredictInput]) -> Listing:
    """One item per real file: the first path that carries a label (normal/, anomalous/), else the first
    path; the other paths come back as duplicates, each with the path it was scored under."""
    reals = [os.path.realpath(item.path) for item in items]
    chosen: dict[str, int] = {}
    for i, (item, real) in enumerate(zip(items, reals)):
        j = chosen.get(real)
        if j is None or (items[j].label == UNLABELLED and item.label != UNLABELLED):
            chosen[real] = i
    keep = set(chosen.values())
    kept = [item for i, item in enumerate(items) if i in keep]
    duplicates = [(item.path, items[chosen[real]].path)
                  for i, (item, real) in enumerate(zip(items, reals)) if i not in keep]
    return Listing(kept, duplicates)


@dataclass
class Decoded:
    """One decoded file: the model input (uint8 C x H x W at the spec), where the image lies in it
    (top, left, height, width), and a copy bounded to the overlay size; or why it could not be read."""

    index: int
    model_input: np.ndarray | None = None
    content: tuple[int, int, int, int] | None = None
    display: np.ndarray | None = None
    reason: str = ""

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.model_input, self.display) if a is not None)


class DecodedFiles:
    """A map-style dataset over files that decodes each one when asked (a DataLoader can spread this
    over workers). Every image is decoded to one uint8 array, brought to the spec for the model and
    shrunk to at most `display_side` pixels for its overlay (None: no overlay copy); the full-size
    pixels are dropped before the next file, so no image is held at full size for long. A plain class
    (no torch Dataset base): an exported model predicts without torch."""

    def __init__(self, items: list[PredictInput], spec: ImageSpec, display_side: int | None) -> None:
        self.items, self.spec, self.display_side = items, spec, display_side

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Decoded:
        return decode_item(index, lambda: read_image(self.items[index].path), self.spec, self.display_side)


def decode_item(index: int, read, spec: ImageSpec, display_side: int | None) -> Decoded:
    """`read()`'s pixels as one Decoded item: the model input at `spec`, the content box and a copy at
    most `display_side` pixels on its longest side (None: no copy); or the reason they could not be
    read. Predict (files) and the inspection service (uploads) decode through this one function."""
    try:
        pixels = read()
        model_input = prepare_image(pixels, spec)
    except UnreadableFileError as err:
        return Decoded(index, reason=err.reason)
    except DataError as err:  # pixels no model input can be made of
        return Decoded(index, reason=str(err))
    height, width = pixels.shape[:2]
    new_h, new_w, top, left = content_geometry(height, width, spec)
    display = None
    if display_side is not None:
        size = display_size(height, width, display_side)
        display = pixels if size == (height, width) else cv2.resize(
            pixels, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return Decoded(index, model_input, (top, left, new_h, new_w), display)


def as_is(item):
    """collate_fn of the predict DataLoader: items stay Decoded objects (sizes differ between images)."""
    return item
