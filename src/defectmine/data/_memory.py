"""The pieces of `ImageDataset.from_tensor`: in-memory images, their records and class masks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from defectmine.errors import DataError
from defectmine.data.images import ImageSpec, prepare_image
from defectmine.data.masks import BACKGROUND, check_classes, class_dtype, class_list
from defectmine.data.records import ANOMALOUS, LABELS, NORMAL, Record

MEMORY_ROOT = Path("<memory>")


def memory_images(images_uint8: torch.Tensor | np.ndarray, spec: ImageSpec) -> torch.Tensor:
    """uint8 (N, C, H, W) at spec: shared with the input when it already fits, else resized."""
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
    return images


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


def memory_records(labels: Sequence[int | bool | str] | None, n: int, *, has_masks: bool) -> list[Record]:
    """Records `<memory>/i` (masks `<memory>/i.mask` when masks are given); anomalies get class "anomalous"."""
    return [
        Record(
            path=MEMORY_ROOT / str(i),
            label=label,
            defect_class=ANOMALOUS if label == ANOMALOUS else "",
            mask=MEMORY_ROOT / f"{i}.mask" if has_masks else None,
        )
        for i, label in enumerate(_label_names(labels, n))
    ]


def memory_class_masks(
    masks: torch.Tensor | np.ndarray | None,
    spec: ImageSpec,
    records: list[Record],
    classes: Sequence[str] | None,
) -> tuple[torch.Tensor, tuple[str, ...]]:
    """(class-index cache (N, H, W), class list) of from_tensor's masks: bool or integer class indices."""
    n = len(records)
    if masks is None:
        names = class_list(records) if classes is None else check_classes(classes)
        return torch.zeros((n, *spec.size), dtype=_torch_dtype(names)), names
    tensor = torch.as_tensor(masks)
    if tuple(tensor.shape) != (n, *spec.size):
        raise DataError(
            f"from_tensor got masks of shape {tuple(tensor.shape)}, expected {(n, *spec.size)}. "
            "Fix: pass one mask per image at spec.size."
        )
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex:
        raise DataError(
            f"from_tensor got {tensor.dtype} masks. Fix: pass bool masks (True = defect) or integer class "
            "indices (0 = background), e.g. masks > 0.5."
        )
    low = int(tensor.min()) if tensor.numel() else 0
    high = int(tensor.max()) if tensor.numel() else 0
    if low < 0:
        raise DataError(f"from_tensor got a class index {low} in masks. Fix: use 0 (background) .. C-1.")
    if classes is None:
        if high > 1:
            raise DataError(
                f"from_tensor got class indices up to {high} but no class list. Fix: pass "
                f"classes=({BACKGROUND!r}, name_1, ..., name_{high}), or bool masks."
            )
        names = (BACKGROUND, ANOMALOUS)
    else:
        names = check_classes(classes)
        if high >= len(names):
            raise DataError(
                f"from_tensor got class index {high} in masks but classes={names!r} has {len(names)} entries. "
                "Fix: pass every class, background first."
            )
    return tensor.to(_torch_dtype(names)).contiguous(), names


def _torch_dtype(classes: tuple[str, ...]) -> torch.dtype:
    return torch.uint8 if class_dtype(len(classes)) == np.uint8 else torch.int16
