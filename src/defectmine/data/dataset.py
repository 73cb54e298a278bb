"""An in-memory image dataset: every image is decoded once, then epochs only index tensors."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from defectmine.errors import DataError
from defectmine.data._messages import listing
from defectmine.progress import track
from defectmine.data.images import (
    ImageSpec,
    UnreadableFileError,
    normalise,
    prepare_image,
    prepare_mask,
    read_image,
    read_mask,
)
from defectmine.data.records import ANOMALOUS, LABELS, NORMAL, Record

log = logging.getLogger(__name__)

MEMORY_ROOT = Path("<memory>")


def check_records(records: Sequence[Record]) -> None:
    """Raise DataError for unknown labels or duplicate image paths (checked before any decoding)."""
    bad_labels = [r for r in records if r.label not in LABELS]
    if bad_labels:
        lines = [f"{r.path}: label {r.label!r}" for r in bad_labels]
        raise DataError(
            f"{len(bad_labels)} record(s) have an unknown label:\n{listing(lines)}\n"
            f"Fix: use {NORMAL!r} or {ANOMALOUS!r}."
        )
    counts = Counter(os.path.normpath(os.path.abspath(r.path)) for r in records)
    duplicates = sorted(p for p, n in counts.items() if n > 1)
    if duplicates:
        lines = [f"{p} ({counts[p]} times)" for p in duplicates]
        raise DataError(
            f"{len(duplicates)} image path(s) appear more than once:\n{listing(lines)}\n"
            "Fix: list every image once (remove the duplicate rows or files)."
        )


class ImageDataset(Dataset):
    """Images (and masks) of a list of records, decoded once into uint8 tensors.

    Every image is read at construction, brought to `spec` (size, channels, resize policy) and kept
    in a (N, C, H, W) uint8 cache; masks go to a (N, H, W) bool cache (all False for records without
    a mask). Unreadable files are all collected first and reported in one DataError; with
    `skip_bad=True` they are dropped instead and listed in `self.skipped` as (path, reason).

    Items are dicts: image (float32 normalised, C×H×W), raw (uint8, C×H×W), label (0 normal,
    1 anomalous), mask (float32 H×W), has_mask (bool), index (position in this dataset).
    """

    def __init__(
        self, records: Sequence[Record], spec: ImageSpec, *, skip_bad: bool = False, quiet: bool = True
    ) -> None:
        records = list(records)
        check_records(records)
        self.spec = spec
        self.skipped: list[tuple[Path, str]] = []
        images, masks, problems = _decode(records, spec, quiet=quiet)
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
    ) -> "ImageDataset":
        """A dataset over in-memory images (N, C, H, W) or (N, H, W) uint8.

        Images already at `spec` are used as they are (memory shared); others are resized with
        `prepare_image`. `labels` are 0/1 (or "normal"/"anomalous"), default all normal. `masks`,
        if given, are bool (N, H, W) at `spec.size`. Records get synthetic paths `<memory>/i`.
        """
        images = torch.as_tensor(images_uint8)
        if images.dtype != torch.uint8 or images.ndim not in (3, 4):
            raise DataError(
                f"from_tensor got a {images.dtype} tensor of shape {tuple(images.shape)}. "
                "Fix: pass uint8 images shaped (N, C, H, W) or (N, H, W)."
            )
        if images.ndim == 3:
            images = images[:, None]
        n = images.shape[0]
        if images.shape[1:] != (spec.channels, *spec.size):
            if images.shape[1] not in (1, 3):
                raise DataError(
                    f"from_tensor got {images.shape[1]} channels. Fix: pass 1 (gray) or 3 (RGB) channel images."
                )
            hwc = images.permute(0, 2, 3, 1).numpy()
            images = torch.from_numpy(np.stack([prepare_image(x, spec) for x in hwc])) if n else (
                torch.zeros((0, spec.channels, *spec.size), dtype=torch.uint8)
            )
        label_names = _label_names(labels, n)
        if masks is None:
            mask_tensor = torch.zeros((n, *spec.size), dtype=torch.bool)
        else:
            mask_tensor = torch.as_tensor(masks).to(torch.bool)
            if tuple(mask_tensor.shape) != (n, *spec.size):
                raise DataError(
                    f"from_tensor got masks of shape {tuple(mask_tensor.shape)}, expected {(n, *spec.size)}. "
                    "Fix: pass one bool mask per image at spec.size."
                )
        records = [
            Record(
                path=MEMORY_ROOT / str(i),
                label=label,
                defect_class=ANOMALOUS if label == ANOMALOUS else "",
                mask=None if masks is None else MEMORY_ROOT / f"{i}.mask",
            )
            for i, label in enumerate(label_names)
        ]
        ds = cls.__new__(cls)
        ds.spec, ds.skipped, ds.records = spec, [], records
        ds._images, ds._masks, ds._rows = images.contiguous(), mask_tensor, None
        return ds

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        i = range(len(self.records))[i]  # IndexError and negative indices, like a list
        row = i if self._rows is None else int(self._rows[i])
        record = self.records[i]
        raw = self._images[row].clone()  # callers may augment in place; the cache must stay intact
        return {
            "image": normalise(raw, self.spec),
            "raw": raw,
            "label": int(record.is_anomalous),
            "mask": self._masks[row].to(torch.float32),
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
    def labels(self) -> np.ndarray:
        """int64 (N,): 0 normal, 1 anomalous."""
        return np.array([int(r.is_anomalous) for r in self.records], dtype=np.int64)

    @property
    def has_masks(self) -> bool:
        """True if any record has a ground-truth mask."""
        return any(r.mask is not None for r in self.records)

    def masks(self) -> np.ndarray:
        """bool (N, H, W) at spec.size (a copy; all False where a record has no mask)."""
        rows = self._masks if self._rows is None else self._masks.index_select(0, self._rows)
        return rows.numpy().copy()

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
        ds.spec, ds.skipped = self.spec, []
        ds.records = [self.records[i] for i in idx.tolist()]
        ds._images, ds._masks = self._images, self._masks
        ds._rows = base_rows[idx]
        return ds


def _label_names(labels: Sequence[int | bool | str] | None, n: int) -> list[str]:
    if labels is None:
        return [NORMAL] * n
    labels = list(np.asarray(labels).reshape(-1).tolist()) if not isinstance(labels, (list, tuple)) else list(labels)
    if len(labels) != n:
        raise DataError(f"from_tensor got {len(labels)} labels for {n} images. Fix: pass one label per image.")
    names = []
    for label in labels:
        if label in LABELS:
            names.append(label)
        elif not isinstance(label, str) and label in (0, 1):
            names.append(ANOMALOUS if label else NORMAL)
        else:
            raise DataError(f"from_tensor got label {label!r}. Fix: use 0/1 or 'normal'/'anomalous'.")
    return names


def _size(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]}"


def _decode(records: list[Record], spec: ImageSpec, *, quiet: bool) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Decode all records into caches; returns (images, masks, problems) with problems as
    (row, image path, reason) for every record that failed, so they can all be reported at once."""
    images = torch.zeros((len(records), spec.channels, *spec.size), dtype=torch.uint8)
    masks = torch.zeros((len(records), *spec.size), dtype=torch.bool)
    problems: list[tuple[int, Path, str]] = []
    items = track(enumerate(records), "decoding images", total=len(records), quiet=quiet)
    for i, record in items:
        try:
            pixels = read_image(record.path)
        except UnreadableFileError as e:
            problems.append((i, record.path, e.reason))
            continue
        if record.mask is not None:
            try:
                mask = read_mask(record.mask)
            except UnreadableFileError as e:
                problems.append((i, record.path, f"cannot read its mask {record.mask} ({e.reason})"))
                continue
            if mask.shape != pixels.shape[:2]:
                problems.append(
                    (
                        i,
                        record.path,
                        f"image is {_size(pixels.shape)} (WxH) but its mask {record.mask} is {_size(mask.shape)}",
                    )
                )
                continue
            masks[i] = torch.from_numpy(prepare_mask(mask, spec))
        images[i] = torch.from_numpy(prepare_image(pixels, spec))
    return images, masks, problems
