"""An in-memory image dataset: every image is decoded once, then epochs only index tensors."""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from defectmine.errors import DataError
from defectmine.data._memory import memory_class_masks, memory_images, memory_records
from defectmine.data._messages import listing
from defectmine.progress import track
from defectmine.data.images import ImageSpec, enlarges, normalise, prepare_image, prepare_mask, read_image
from defectmine.data.masks import check_classes, class_dtype, class_indices, class_list, mask_classes
from defectmine.data.pixels import UnreadableFileError, read_mask_values
from defectmine.data.records import ANOMALOUS, LABELS, NORMAL, SPLITS, Record

log = logging.getLogger(__name__)


def check_records(records: Sequence[Record]) -> None:
    """Raise DataError for unknown labels or images listed twice: the same path twice, or two paths
    that are one file (symbolic links, `os.path.realpath`). Checked before any decoding."""
    bad_labels = [r for r in records if r.label not in LABELS]
    if bad_labels:
        lines = [f"{r.path}: label {r.label!r}" for r in bad_labels]
        raise DataError(
            f"{len(bad_labels)} record(s) have an unknown label:\n{listing(lines)}\n"
            f"Fix: use {NORMAL!r} or {ANOMALOUS!r}."
        )
    counts = Counter(os.path.normpath(os.path.abspath(r.path)) for r in records)
    lines = [f"{p} ({counts[p]} times)" for p in sorted(p for p, n in counts.items() if n > 1)]
    # A linked copy would sit in two splits (train and test) as two different paths: a silent leak.
    spellings = defaultdict(list)
    for path in counts:
        spellings[os.path.realpath(path)].append(path)
    lines += [
        f"{' and '.join(sorted(paths))} are the same file {real}"
        for real, paths in sorted(spellings.items())
        if len(paths) > 1
    ]
    if lines:
        raise DataError(
            f"{len(lines)} image(s) appear more than once:\n{listing(lines)}\n"
            "Fix: list every image once (remove the duplicate rows, files or symbolic links)."
        )


class ImageDataset(Dataset):
    """Images (and class masks) of a list of records, decoded once into compact tensors.

    Every image is read at construction, brought to `spec` (size, channels, resize policy) and kept
    in a (N, C, H, W) uint8 cache; masks go to a (N, H, W) cache of class indices into `classes`
    (uint8, int16 beyond 256 classes; all 0 for records without a mask). `classes` is ("background",
    *sorted defect classes of the anomalous records), or the list passed as `classes=` so that val and
    test index the same classes as train. How mask files are read (binary or class indices):
    `defectmine.data.masks`. Unreadable files are all collected first and reported in one DataError;
    with `skip_bad=True` they are dropped instead and listed in `self.skipped` as (path, reason).

    Items are dicts: image (float32 normalised, C×H×W), raw (uint8, C×H×W), label (0 normal,
    1 anomalous), mask (float32 0/1, H×W), class_mask (int64 class indices, H×W), has_mask (bool),
    index (position in this dataset).
    """

    def __init__(
        self,
        records: Sequence[Record],
        spec: ImageSpec,
        *,
        classes: Sequence[str] | None = None,
        skip_bad: bool = False,
        quiet: bool = True,
    ) -> None:
        records = list(records)
        check_records(records)
        self.spec = spec
        self._classes = class_list(records) if classes is None else check_classes(classes)
        self.skipped: list[tuple[Path, str]] = []
        images, masks, problems = _decode(records, spec, self._classes, quiet=quiet)
        if problems:
            bad_rows = sorted({i for i, _, _ in problems})
            lines = [f"{path}: {reason}" for _, path, reason in problems]
            if not skip_bad:
                size_problem = any("but its mask" in reason for *_, reason in problems)
                mask_hint = " (a mask must have the size of its image)" if size_problem else ""
                raise DataError(
                    f"{len(bad_rows)} of {len(records)} image(s) could not be loaded:\n{listing(lines)}\n"
                    f"Fix: replace or remove these files{mask_hint}, or pass --skip-bad (skip_bad=True) to skip them."
                )
            if len(bad_rows) == len(records):
                raise DataError(
                    f"none of the {len(records)} image(s) could be loaded:\n{listing(lines)}\n"
                    "Fix: check that the paths point at image files (PNG, JPEG, BMP, TIFF)."
                )
            self.skipped = [(path, reason) for _, path, reason in problems]
            keep = torch.ones(len(records), dtype=torch.bool)
            keep[bad_rows] = False
            images, masks = images[keep], masks[keep]
            records = [r for r, k in zip(records, keep.tolist()) if k]
            log.warning("skipped %d unreadable file(s):\n%s", len(bad_rows), listing(lines))
        self.records: list[Record] = records
        self._images = images
        self._masks = masks
        # Rows of this dataset in the shared caches; None means "all rows, in order" (no gather needed).
        self._rows: torch.Tensor | None = None

    @classmethod
    def from_tensor(
        cls,
        images_uint8: torch.Tensor | np.ndarray,
        spec: ImageSpec,
        labels: Sequence[int | bool | str] | None = None,
        masks: torch.Tensor | np.ndarray | None = None,
        *,
        classes: Sequence[str] | None = None,
        split: str = "",
    ) -> "ImageDataset":
        """A dataset over in-memory images (N, C, H, W) or (N, H, W) uint8.

        Images already at `spec` are used as they are (memory shared); others are resized with
        `prepare_image`. `labels` are 0/1 (or "normal"/"anomalous"), default all normal. `masks`, if
        given, are (N, H, W) at `spec.size`: bool (True = defect, class 1), or integer class indices
        into `classes`. `classes` defaults to ("background", "anomalous") for bool or 0/1 masks and is
        required for integer masks with more classes. Records get synthetic paths `<memory>/i` and
        anomalous ones the defect class "anomalous". `split` ("val" for a validation set, which
        thresholds and model selection require) is set on every record.
        """
        if split not in SPLITS:
            raise DataError(f"from_tensor got split={split!r}. Fix: use one of {', '.join(repr(s) for s in SPLITS)}.")
        images = memory_images(images_uint8, spec)
        records = [r.with_split(split) for r in memory_records(labels, images.shape[0], has_masks=masks is not None)]
        mask_tensor, names = memory_class_masks(masks, spec, records, classes)
        ds = cls.__new__(cls)
        ds.spec, ds.skipped, ds.records, ds._classes = spec, [], records, names
        ds._images, ds._masks, ds._rows = images.contiguous(), mask_tensor, None
        return ds

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        i = range(len(self.records))[i]  # IndexError and negative indices, like a list
        row = i if self._rows is None else int(self._rows[i])
        record = self.records[i]
        raw = self._images[row].clone()  # callers may augment in place; the cache must stay intact
        class_mask = self._masks[row]
        return {
            "image": normalise(raw, self.spec),
            "raw": raw,
            "label": int(record.is_anomalous),
            "mask": (class_mask != 0).to(torch.float32),
            "class_mask": class_mask.to(torch.int64),
            "has_mask": record.mask is not None,
            "index": i,
        }

    def __repr__(self) -> str:
        n_anom = int(self.labels.sum())
        return (
            f"ImageDataset({len(self)} images: {len(self) - n_anom} normal, {n_anom} anomalous; "
            f"{self.spec.channels}x{self.spec.height}x{self.spec.width}, resize={self.spec.resize!r})"
        )

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names indexed by `class_masks()`: ("background", defect classes...)."""
        return self._classes

    @property
    def labels(self) -> np.ndarray:
        """int64 (N,): 0 normal, 1 anomalous."""
        return np.array([int(r.is_anomalous) for r in self.records], dtype=np.int64)

    @property
    def has_masks(self) -> bool:
        """True if any record has a ground-truth mask."""
        return any(r.mask is not None for r in self.records)

    @property
    def mask_available(self) -> np.ndarray:
        """bool (N,): whether `masks()[i]` is ground truth. True for records with a mask and for normal
        records (all background by definition); False for anomalous records without a mask, whose
        all-background row in `masks()` is unknown, not normal: leave them out of pixel metrics."""
        return np.array([r.mask is not None or not r.is_anomalous for r in self.records], dtype=bool)

    def _mask_rows(self) -> torch.Tensor:
        return self._masks if self._rows is None else self._masks.index_select(0, self._rows)

    def masks(self) -> np.ndarray:
        """bool (N, H, W) at spec.size: defect pixels of any class, `class_masks() > 0` (a copy; all
        False where a record has no mask, see `mask_available`)."""
        return (self._mask_rows() != 0).numpy()

    def class_masks(self) -> np.ndarray:
        """int64 (N, H, W) at spec.size: indices into `classes`, 0 = background (a copy)."""
        return self._mask_rows().to(torch.int64).numpy()

    def raw_images(self) -> torch.Tensor:
        """uint8 (N, C, H, W): the cache itself for a full dataset, a gathered copy for a subset."""
        return self._images if self._rows is None else self._images.index_select(0, self._rows)

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> "ImageDataset":
        """A dataset of the given positions (in this dataset) that shares the decoded caches."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64).reshape(-1))
        n = len(self.records)
        if idx.numel() and (int(idx.min()) < -n or int(idx.max()) >= n):
            raise IndexError(f"subset indices must lie in [-{n}, {n}); got {idx.min().item()}..{idx.max().item()}")
        idx = torch.where(idx < 0, idx + n, idx)
        base_rows = torch.arange(n) if self._rows is None else self._rows
        ds = self.__class__.__new__(self.__class__)
        ds.spec, ds.skipped, ds._classes = self.spec, [], self._classes
        ds.records = [self.records[i] for i in idx.tolist()]
        ds._images, ds._masks = self._images, self._masks
        ds._rows = base_rows[idx]
        return ds


def _size(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]}"


def _warn_enlarged(sizes: list[tuple[int, int]], n: int, spec: ImageSpec) -> None:
    """One warning per dataset (not per image) when images are upsampled to the spec size."""
    if not sizes:
        return
    smallest = min(sizes, key=lambda hw: hw[0] * hw[1])
    side = min(min(hw) for hw in sizes)
    log.warning(
        "%d of %d image(s) are smaller than the image size %dx%d (WxH) and were enlarged (smallest: %s "
        "WxH); enlarging adds no detail. Pass --image-size %d to work at native resolution.",
        len(sizes), n, spec.width, spec.height, _size(smallest), side,
    )


def _decode(
    records: list[Record], spec: ImageSpec, classes: tuple[str, ...], *, quiet: bool
) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Decode all records into caches; returns (images, class masks, problems) with problems as
    (row, image path, reason) for every record that failed, so they can all be reported at once."""
    index = class_indices(records, classes)
    images = torch.zeros((len(records), spec.channels, *spec.size), dtype=torch.uint8)
    masks = torch.from_numpy(np.zeros((len(records), *spec.size), dtype=class_dtype(len(classes))))
    problems: list[tuple[int, Path, str]] = []
    enlarged: list[tuple[int, int]] = []
    items = track(enumerate(records), "decoding images", total=len(records), quiet=quiet)
    for i, record in items:
        try:
            pixels = read_image(record.path)
        except UnreadableFileError as e:
            problems.append((i, record.path, e.reason))
            continue
        if record.mask is not None:
            try:
                values, kind = read_mask_values(record.mask)
            except UnreadableFileError as e:
                problems.append((i, record.path, f"cannot read its mask {record.mask} ({e.reason})"))
                continue
            if values.shape[:2] != pixels.shape[:2]:
                problems.append(
                    (
                        i,
                        record.path,
                        f"image is {_size(pixels.shape)} (WxH) but its mask {record.mask} is {_size(values.shape)}",
                    )
                )
                continue
            try:
                mask = mask_classes(values, kind, index[i], classes, source=record.mask)
            except UnreadableFileError as e:
                problems.append((i, record.path, f"its mask {record.mask} is not usable: {e.reason}; fix: {e.fix}"))
                continue
            masks[i] = torch.from_numpy(prepare_mask(mask, spec))
        if enlarges(*pixels.shape[:2], spec):
            enlarged.append(pixels.shape[:2])
        images[i] = torch.from_numpy(prepare_image(pixels, spec))
    _warn_enlarged(enlarged, len(records) - len({i for i, _, _ in problems}), spec)
    return images, masks, problems
