"""Training batches of segmenters: the images with known masks, oversampled defects, joint augmentation."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from defectmine.data.dataset import ImageDataset
from defectmine.data.images import ImageSpec, normalise
from defectmine.errors import DataError
from defectmine.models.training import anomalous_slots, mixed_batches, n_batches
from defectmine.segment.augment import flips_and_rotations

log = logging.getLogger(__name__)

# Class masks are gathered this many images at a time, so that their int64 copies stay small.
_MASK_CHUNK = 256


@dataclass
class TrainingPool:
    """The training images whose masks are known, on the training device.

    pixels: uint8 (N, C, H, W); masks: class indices (N, H, W), uint8 (int16 beyond 256 classes);
    defective / clean: positions (CPU int64) of the images with and without defect pixels;
    pixel_counts: pixels per class over all masks, background first.
    """

    pixels: torch.Tensor
    masks: torch.Tensor
    defective: torch.Tensor
    clean: torch.Tensor
    pixel_counts: list[int]

    @classmethod
    def from_dataset(cls, train: ImageDataset, device: torch.device) -> "TrainingPool":
        """The pool of `train`; anomalous images without a mask (unknown ground truth) are left out."""
        available = train.mask_available
        if not available.all():
            log.warning("%d anomalous training image(s) have no mask and are left out of segmentation training",
                        int((~available).sum()))
        kept = train.subset(np.flatnonzero(available))
        masks, counts = _compact_class_masks(kept)
        has_defect = (masks.flatten(1) != 0).any(dim=1)  # bool: any() of uint8 would stay uint8
        if not has_defect.any():
            raise DataError(
                "fit: no training image with a known mask has a defect pixel; a segmenter learns the classes from "
                "them. Fix: add anomalous images with masks to the training set."
            )
        return cls(
            pixels=kept.raw_images().to(device),
            masks=masks.to(device),
            defective=has_defect.nonzero().flatten(),
            clean=(~has_defect).nonzero().flatten(),
            pixel_counts=counts,
        )

    def __len__(self) -> int:
        return len(self.pixels)


def _compact_class_masks(dataset: ImageDataset) -> tuple[torch.Tensor, list[int]]:
    """(class masks (N, H, W) in the smallest integer type, pixel counts per class)."""
    n_classes = len(dataset.classes)
    dtype = torch.uint8 if n_classes <= 256 else torch.int16
    chunks, counts = [], np.zeros(n_classes, dtype=np.int64)
    for start in range(0, len(dataset), _MASK_CHUNK):
        masks = dataset.subset(np.arange(start, min(start + _MASK_CHUNK, len(dataset)))).class_masks()
        counts += np.bincount(masks.reshape(-1), minlength=n_classes)[:n_classes]
        chunks.append(torch.from_numpy(masks).to(dtype))
    empty = torch.zeros((0, *dataset.spec.size), dtype=dtype)
    return (torch.cat(chunks) if chunks else empty), counts.tolist()


def segmentation_batches(
    pool: TrainingPool,
    *,
    spec: ImageSpec,
    batch_size: int,
    defect_share: float | None,
    augment: bool,
    augment_batch: Callable | None,
    generator: torch.Generator,
) -> tuple[Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]], int]:
    """(a function giving one epoch of (images, masks) batches, the number of batches per epoch).

    With `defect_share`, each batch has that share of defective images drawn with replacement and
    the rest from a shuffled pass over the defect-free images (`models.training.mixed_batches`);
    without it, or without defect-free images, batches are a shuffled pass over all images. Images
    come out normalised (channels_last), masks as int64 class indices.
    """
    oversample = defect_share is not None and anomalous_slots(batch_size, defect_share) > 0 and len(pool.clean) > 0
    base = pool.clean if oversample else torch.arange(len(pool))
    share = defect_share if oversample else 0.0
    device = pool.pixels.device

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in mixed_batches(len(base), len(pool.defective) if oversample else 0, batch_size=batch_size,
                                   anomaly_share=share, synthetic=False, generator=generator):
            rows = torch.cat([base[batch.normal], pool.defective[batch.anomalous]]).to(device)
            images, masks = pool.pixels[rows], pool.masks[rows].to(torch.int64)
            if augment:
                images, masks = flips_and_rotations(images, masks, generator)
            if augment_batch is not None:
                images, masks = _checked_hook_output(augment_batch(images, masks, generator), images, masks)
            yield normalise(images, spec).contiguous(memory_format=torch.channels_last), masks

    return batches, n_batches(len(base), batch_size, share)


def _checked_hook_output(output, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The hook's (images, masks), or a DataError saying how it broke the contract."""
    ok = isinstance(output, tuple) and len(output) == 2 and all(isinstance(t, torch.Tensor) for t in output)
    if ok:
        new_images, new_masks = output
        ok = (new_images.dtype == torch.uint8 and new_images.shape[1:] == images.shape[1:]
              and new_masks.shape[1:] == masks.shape[1:] and len(new_masks) == len(new_images)
              and not new_masks.dtype.is_floating_point)
    if not ok:
        image_shape, mask_shape = ", ".join(map(str, images.shape[1:])), ", ".join(map(str, masks.shape[1:]))
        raise DataError(
            f"augment_batch must return (images, masks): uint8 images (B, {image_shape}) and integer class masks "
            f"(B, {mask_shape}). Fix: return the batch in the form the hook received it."
        )
    return new_images, new_masks.to(torch.int64)
