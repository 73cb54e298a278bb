"""Dynamic Label Injection (DLI; Caruso et al., "Dynamic Label Injection for Imbalanced Industrial
Defect Segmentation", 2024): balance the defect classes of every training batch by pasting defects of
the rarest class into its defect-free images.

    pool = defect_pool(train.raw_images(), train.class_masks(), train.classes)   # training split only
    images, masks, info = inject(images, masks, pool, np.random.default_rng(0))  # one batch, numpy
    augment = DynamicLabelInjection(pool)              # the segmenter's augment_batch hook (torch)
    images, masks = augment(images, masks, generator)

Everything is data or a pure function: the pool is frozen plain data built from arrays (no dataset
knowledge, no hidden state to set), `inject` returns new arrays and takes its randomness from the
generator it is given. How one crop is transformed and blended: `defectmine.data.blending`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from defectmine.data.blending import CropTransform, check_methods, paste
from defectmine.data.masks import check_classes
from defectmine.errors import ConfigError, DataError

log = logging.getLogger(__name__)

DEFAULT_METHODS = ("poisson", "cutpaste")
DEFAULT_MARGIN = 8


@dataclass(frozen=True, eq=False)
class Crop:
    """One connected defect region cut from a training image: pixels (C, h, w) uint8 around it (the
    region's bounding box plus a margin, clipped to the image) and mask (h, w) bool, True exactly on
    the region. `source` is the image's index in the arrays the pool was built from. Arrays are
    read-only copies."""

    pixels: np.ndarray
    mask: np.ndarray
    source: int = -1

    def __post_init__(self) -> None:
        pixels, mask = np.array(self.pixels, copy=True), np.array(self.mask, copy=True)
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[0] not in (1, 3):
            raise DataError(f"Crop pixels must be uint8 (C, h, w) with C = 1 or 3; got {pixels.dtype} {pixels.shape}.")
        if mask.dtype != bool or mask.shape != pixels.shape[1:] or not mask.any():
            raise DataError(
                f"Crop mask must be bool {pixels.shape[1:]} with at least one defect pixel; "
                f"got {mask.dtype} {mask.shape}."
            )
        pixels.setflags(write=False)
        mask.setflags(write=False)
        object.__setattr__(self, "pixels", pixels)
        object.__setattr__(self, "mask", mask)


@dataclass(frozen=True, eq=False)
class DefectPool:
    """Defect crops per class: `crops[c]` holds the crops of class `classes[c]` (`crops[0]`, the
    background, is empty). Build it with `defect_pool` from training images only."""

    classes: tuple[str, ...]
    crops: tuple[tuple[Crop, ...], ...]

    def __post_init__(self) -> None:
        classes = check_classes(self.classes)
        crops = tuple(tuple(c) for c in self.crops)
        if len(crops) != len(classes) or crops[0]:
            raise DataError(
                f"DefectPool needs one crop list per class of {classes!r} ({len(classes)}), the background's "
                f"empty; got {len(crops)} list(s). Fix: build it with defect_pool(...)."
            )
        channels = {crop.pixels.shape[0] for group in crops for crop in group}
        if len(channels) > 1:
            raise DataError(f"DefectPool crops mix {sorted(channels)} channels. Fix: build it from one image set.")
        object.__setattr__(self, "classes", classes)
        object.__setattr__(self, "crops", crops)

    @property
    def counts(self) -> tuple[int, ...]:
        """Number of crops per class index (0 for the background)."""
        return tuple(len(group) for group in self.crops)

    @property
    def empty_classes(self) -> tuple[str, ...]:
        """Defect classes without a crop: injection refuses to draw from them."""
        return tuple(name for name, group in zip(self.classes[1:], self.crops[1:]) if not group)

    @property
    def channels(self) -> int | None:
        """Image channels of the crops (None for a pool without crops)."""
        return next((group[0].pixels.shape[0] for group in self.crops if group), None)

    def __repr__(self) -> str:
        parts = ", ".join(f"{n}: {k}" for n, k in zip(self.classes[1:], self.counts[1:]))
        return f"DefectPool({parts})"


def _numpy(array, name: str) -> np.ndarray:
    """numpy view of a numpy array or torch tensor (any device)."""
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    if isinstance(array, np.ndarray):
        return array
    raise DataError(f"{name} must be a numpy array or torch tensor; got {type(array).__name__}.")


def _check_batch(images, masks, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, C, H, W) with C = 1 or 3 and masks integer (N, H, W) of class indices < n_classes."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise DataError(
            f"images must be uint8 (N, C, H, W) with C = 1 (gray) or 3 (RGB); got {images.dtype} {images.shape}. "
            "Fix: pass the raw uint8 images (ImageDataset.raw_images(), item['raw']), before normalising."
        )
    if not np.issubdtype(masks.dtype, np.integer) or masks.shape != (images.shape[0], *images.shape[2:]):
        raise DataError(
            f"masks must be integer class indices of shape (N, H, W) = {(images.shape[0], *images.shape[2:])}; "
            f"got {masks.dtype} {masks.shape}. Fix: pass ImageDataset.class_masks() (or item['class_mask'])."
        )
    if masks.size and (masks.min() < 0 or masks.max() >= n_classes):
        raise DataError(
            f"masks hold class indices {int(masks.min())}..{int(masks.max())} but there are {n_classes} classes. "
            "Fix: use the same class list for the masks and the defect pool."
        )
    return images, masks


def defect_pool(images_uint8, class_masks, classes: Sequence[str], margin: int = DEFAULT_MARGIN) -> DefectPool:
    """Cut every connected defect region (8-connected, per class) of the images into a `Crop`: the
    region's bounding box grown by `margin` pixels of context (clipped to the image) and the region's
    own mask. images_uint8: (N, C, H, W) uint8, numpy or torch; class_masks: (N, H, W) class indices
    into `classes` ("background" first), e.g. `ImageDataset.raw_images()`, `.class_masks()`,
    `.classes` of the training split. Classes without any region are logged and listed in
    `pool.empty_classes`; they are an error only when injection needs them."""
    classes = check_classes(classes)
    images, masks = _check_batch(_numpy(images_uint8, "images_uint8"), _numpy(class_masks, "class_masks"), len(classes))
    if isinstance(margin, bool) or not isinstance(margin, (int, np.integer)) or margin < 0:
        raise ConfigError(f"margin={margin!r}: use a whole number of pixels >= 0.")
    crops: list[list[Crop]] = [[] for _ in classes]
    height, width = masks.shape[1:]
    for index, (image, mask) in enumerate(zip(images, masks)):
        for c in np.unique(mask):
            if c == 0:
                continue
            n, labels, stats, _ = cv2.connectedComponentsWithStats((mask == c).astype(np.uint8), connectivity=8)
            for k in range(1, n):
                x, y, w, h = (int(v) for v in stats[k, :4])
                y0, x0 = max(0, y - margin), max(0, x - margin)
                y1, x1 = min(height, y + h + margin), min(width, x + w + margin)
                region = labels[y0:y1, x0:x1] == k  # this region only, not its neighbours in the margin
                crops[int(c)].append(Crop(image[:, y0:y1, x0:x1], region, source=index))
    pool = DefectPool(classes, tuple(tuple(group) for group in crops))
    if pool.empty_classes:
        log.warning("defect pool: no defect region of class(es) %s", ", ".join(pool.empty_classes))
    return pool


@dataclass(frozen=True)
class Injection:
    """One pasted defect: batch position, class (index and name), method actually used (a Poisson
    blend without room falls back to "cutpaste"), crop position in `pool.crops[class_index]`, and the
    label's bounding box (top, left, height, width) with its pixel count."""

    image: int
    class_index: int
    class_name: str
    method: str
    crop: int
    box: tuple[int, int, int, int]
    pixels: int


def class_counts(masks: np.ndarray, n_classes: int) -> np.ndarray:
    """Images containing each class (eq. 5 counts images, not pixels): int64 (n_classes,), index 0
    counting the defect-free images."""
    counts = np.zeros(n_classes, np.int64)
    for mask in masks:
        present = np.unique(mask)
        counts[present] += 1
    counts[0] = int(sum(1 for mask in masks if not mask.any()))
    return counts


def _check_options(
    pool: DefectPool, methods: Sequence[str], keep_clean: float, classes: Sequence[int] | None
) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Validated (methods, class indices to balance); ConfigError naming the bad option."""
    if not isinstance(pool, DefectPool):
        raise ConfigError(f"pool must be a DefectPool (from defect_pool(...)); got {type(pool).__name__}.")
    methods = check_methods(methods)
    if isinstance(keep_clean, bool) or not isinstance(keep_clean, (int, float)) or not 0 <= keep_clean <= 1:
        raise ConfigError(f"keep_clean={keep_clean!r}: use a share in [0, 1].")
    if classes is None:  # every class the pool can supply
        return methods, tuple(c for c in range(1, len(pool.classes)) if pool.crops[c])
    given = classes
    indices = all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in given)
    classes = tuple(int(c) for c in given) if indices else ()
    if not classes or len(set(classes)) != len(classes) or not all(1 <= c < len(pool.classes) for c in classes):
        raise ConfigError(
            f"classes={given!r}: use distinct defect class indices in 1..{len(pool.classes) - 1} "
            f"of {pool.classes!r}."
        )
    return methods, classes


def _check_can_fill(pool: DefectPool, candidates: tuple[int, ...]) -> None:
    """DataError when there is no class to draw from: an empty pool (or no classes with crops)."""
    if not candidates:
        raise DataError(
            f"the defect pool has no crop of any class ({pool!r}) but defect-free images are to be filled. "
            "Fix: build the pool from training images with defect masks, or pass keep_clean=1."
        )


def _needed_crops(pool: DefectPool, c: int) -> tuple[Crop, ...]:
    """The crops of class c, or a DataError naming the class when it has none."""
    if pool.crops[c]:
        return pool.crops[c]
    raise DataError(
        f"injection needs a defect of class {pool.classes[c]!r} but the pool has none ({pool!r}). "
        f"Fix: add training images of that class, or leave it out of classes= (the classes with crops are "
        f"{[i for i in range(1, len(pool.classes)) if pool.crops[i]]})."
    )


def inject(
    images: np.ndarray,
    masks: np.ndarray,
    pool: DefectPool,
    rng: np.random.Generator,
    *,
    methods: Sequence[str] = DEFAULT_METHODS,
    keep_clean: float = 0.0,
    transform: CropTransform = CropTransform(),
    classes: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[Injection, ...]]:
    """Dynamic Label Injection of one batch (paper sec. 3.2, Algorithm 1).

    images: uint8 numpy (B, C, H, W), C = 1 or 3; masks: integer numpy (B, H, W) class indices into
    `pool.classes`. Returns new arrays (the inputs are never modified; masks keep their dtype) and
    what was injected, in order.

    Every defect-free image (mask all 0) receives one defect of the currently rarest class, eq. 5:
    c* = argmin_c |{I_d in B : M_d contains c}|, counted in images (as the paper's eq. 5 and code
    count), not pixels, and updated after every injection so that the batch moves towards balance.
    Ties are broken at random (the paper's argmin takes the lowest index, which favours the first
    class batch after batch). Images with defects are left as they are. The crop is drawn at random
    from its class, transformed (`transform`: flip, rotation, scale), placed at random, and blended by
    a method drawn per paste from `methods`: "poisson" (Poisson seamless cloning with mixed gradients,
    the paper's variant, OpenCV MIXED_CLONE), "poisson_normal" (NORMAL_CLONE) or "cutpaste" (hard
    paste). The mask gets the crop's class exactly on the pasted defect pixels.

    keep_clean: share of the defect-free images left defect-free (the paper's code fills them all;
    keeping some lets the model still see clean tiles); the count kept is rounded at random so that
    its expectation is exact. classes: defect class indices to balance (default: every class the
    pool has crops of); a class without crops is an error only when it is the one needed.
    """
    methods, candidates = _check_options(pool, methods, keep_clean, classes)
    if not isinstance(rng, np.random.Generator):
        raise ConfigError(
            f"rng must be a numpy.random.Generator (np.random.default_rng(seed)); got {type(rng).__name__}."
        )
    if not isinstance(images, np.ndarray) or not isinstance(masks, np.ndarray):
        raise DataError(
            "inject takes numpy arrays. Fix: for torch tensors, call DynamicLabelInjection(pool)(images, masks, gen)."
        )
    images, masks = _check_batch(images, masks, len(pool.classes))
    if pool.channels is not None and images.shape[1] != pool.channels:
        raise DataError(
            f"images have {images.shape[1]} channel(s) but the pool's crops have {pool.channels}. "
            "Fix: build the pool from images of the same ImageSpec (channels) as the batch."
        )
    out_images, out_masks = images.copy(), masks.copy()
    clean = np.flatnonzero(~masks.reshape(len(masks), -1).any(1))
    n_keep = keep_clean * len(clean)
    n_keep = int(n_keep) + int(rng.random() < n_keep - int(n_keep))
    fill = np.sort(rng.permutation(clean)[n_keep:])
    counts = class_counts(masks, len(pool.classes))
    done: list[Injection] = []
    if len(fill):
        _check_can_fill(pool, candidates)
    order = np.asarray(candidates, dtype=np.int64)
    for i in fill:
        rarest = order[counts[order] == counts[order].min()]
        c = int(rng.choice(rarest))
        crops = _needed_crops(pool, c)
        k = int(rng.integers(len(crops)))
        method = str(methods[int(rng.integers(len(methods)))])
        crop = crops[k]
        target, pixels = images[i].transpose(1, 2, 0), crop.pixels.transpose(1, 2, 0)  # OpenCV's H, W, C
        new, label, used = paste(target, pixels, crop.mask, method, transform, rng)
        out_images[i] = new.transpose(2, 0, 1)
        out_masks[i][label] = c
        counts[c] += 1
        rows, cols = np.flatnonzero(label.any(1)), np.flatnonzero(label.any(0))
        box = (int(rows[0]), int(cols[0]), int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1))
        done.append(Injection(int(i), c, pool.classes[c], used, k, box, int(label.sum())))
    return out_images, out_masks, tuple(done)


def _numpy_rng(generator) -> np.random.Generator:
    """A numpy Generator from a numpy Generator (used as is), a torch.Generator (seeds a new one from
    its stream, so that a seeded training loop repeats) or an int seed."""
    if isinstance(generator, np.random.Generator):
        return generator
    if isinstance(generator, torch.Generator):
        seed = torch.randint(0, 2**62, (1,), generator=generator, device=generator.device)
        return np.random.default_rng(int(seed))
    if isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
        return np.random.default_rng(int(generator))
    raise ConfigError(
        f"generator must be a torch.Generator, numpy.random.Generator or int seed; got {type(generator).__name__}."
    )


def _check_tensors(images: torch.Tensor, masks: torch.Tensor) -> None:
    """The shape and dtype checks of `_check_batch` that need no copy to the CPU."""
    if images.dtype != torch.uint8 or images.ndim != 4 or masks.shape != (images.shape[0], *images.shape[2:]):
        raise DataError(
            f"augment_batch takes uint8 images (B, C, H, W) and integer class masks (B, H, W); got images "
            f"{images.dtype} {tuple(images.shape)} and masks {masks.dtype} {tuple(masks.shape)}. "
            "Fix: pass the raw uint8 images (item['raw']) and item['class_mask'], before normalising."
        )
    if masks.dtype.is_floating_point or masks.dtype == torch.bool:
        raise DataError(f"masks must be integer class indices; got {masks.dtype}. Fix: pass item['class_mask'].")


class DynamicLabelInjection:
    """The segmenters' `augment_batch(images, masks, generator) -> (images, masks)` hook: `inject`
    with fixed settings, on torch tensors (any device) or numpy arrays.

    Call it on the raw uint8 images (B, C, H, W) and integer class masks (B, H, W) of a training
    batch, before normalising; results come back as the images' type (torch: the inputs' dtypes and
    devices). A batch without defect-free images is returned as it is (the same objects, no copy).
    `generator`: a torch.Generator (a numpy Generator is seeded from its stream, so that a seeded
    training loop repeats), a numpy Generator, or an int seed. Settings are checked here, before training starts;
    a pool without the crops to fill a batch is refused unless keep_clean=1.
    """

    def __init__(
        self,
        pool: DefectPool,
        *,
        methods: Sequence[str] = DEFAULT_METHODS,
        keep_clean: float = 0.0,
        transform: CropTransform = CropTransform(),
        classes: Sequence[int] | None = None,
    ) -> None:
        methods, candidates = _check_options(pool, methods, keep_clean, classes)
        if not isinstance(transform, CropTransform):
            raise ConfigError(f"transform must be a CropTransform; got {type(transform).__name__}.")
        if keep_clean < 1:  # fail before training, not at the first batch
            _check_can_fill(pool, candidates)
            for c in candidates:
                _needed_crops(pool, c)
        self.pool, self.methods, self.keep_clean = pool, methods, keep_clean
        self.transform, self.classes = transform, None if classes is None else candidates

    def __repr__(self) -> str:
        return f"DynamicLabelInjection({self.pool!r}, methods={self.methods!r}, keep_clean={self.keep_clean})"

    def apply(self, images, masks, generator) -> tuple[object, object, tuple[Injection, ...]]:
        """Like calling the hook, plus what was injected (for logging)."""
        as_torch = isinstance(images, torch.Tensor) and isinstance(masks, torch.Tensor)
        if as_torch:
            _check_tensors(images, masks)
            defective = (masks.flatten(1) != 0).any(1).all()
        else:
            _check_batch(_numpy(images, "images"), _numpy(masks, "masks"), len(self.pool.classes))
            defective = masks.reshape(len(masks), -1).any(1).all()
        if bool(defective):  # nothing to fill: no copies (to the CPU and back)
            return images, masks, ()
        new_images, new_masks, info = inject(
            _numpy(images, "images"), _numpy(masks, "masks"), self.pool, _numpy_rng(generator),
            methods=self.methods, keep_clean=self.keep_clean, transform=self.transform, classes=self.classes,
        )
        if as_torch:
            new_images = torch.from_numpy(new_images).to(images.device)
            new_masks = torch.from_numpy(new_masks).to(masks.device)
        if info:
            log.debug("DLI injected %s", ", ".join(f"{d.class_name}->{d.image} ({d.method})" for d in info))
        return new_images, new_masks, info

    def __call__(self, images, masks, generator):
        images, masks, _ = self.apply(images, masks, generator)
        return images, masks
