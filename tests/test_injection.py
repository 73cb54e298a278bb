"""Dynamic Label Injection: the defect pool, inject (eq. 5) and the segmenter hook, on tiny arrays."""

import cv2
import numpy as np
import pytest
import torch

from defectmine.data import CropTransform, DefectPool, DynamicLabelInjection, ImageDataset, ImageSpec
from defectmine.data import defect_pool, inject, scan_folder
from defectmine.data.blending import poisson_paste
from defectmine.errors import ConfigError, DataError

CLASSES = ("background", "blob", "line", "none")


def _texture(n, channels, size, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(80, 140, (n, channels, size, size)).astype(np.uint8)


def _pool(channels=1, size=24):
    """Two source images: class 1 an asymmetric L-shaped blob (bright), class 2 two thin lines (dark);
    class 3 has no region."""
    images = _texture(2, channels, size, seed=1)
    masks = np.zeros((2, size, size), np.int64)
    masks[0, 4:10, 4:7] = 1
    masks[0, 8:10, 7:12] = 1
    masks[1, 15:17, 2:14] = 2
    masks[1, 2:9, 20:22] = 2
    images[(masks == 1)[:, None].repeat(channels, 1)] = 250
    images[(masks == 2)[:, None].repeat(channels, 1)] = 10
    return defect_pool(images, masks, CLASSES, margin=3)


def _clean_batch(n=6, channels=1, size=24, seed=2):
    return _texture(n, channels, size, seed), np.zeros((n, size, size), np.int64)


# --- the pool ---------------------------------------------------------------------------------------


def test_pool_cuts_one_crop_per_region_with_margin_clipped_to_the_image():
    pool = _pool()
    assert pool.counts == (0, 1, 2, 0)
    assert pool.empty_classes == ("none",)
    blob = pool.crops[1][0]
    assert blob.pixels.shape == (1, 6 + 6, 8 + 6) and blob.mask.shape == (12, 14)
    assert blob.mask.sum() == 6 * 3 + 2 * 5 and blob.mask[3, 3] and not blob.mask[0, 0]
    assert (blob.pixels[0][blob.mask] == 250).all()
    # the line at rows 2..8, columns 20..21 of a 24x24 image: the margin is clipped above and right
    vertical = [c for c in pool.crops[2] if c.mask.shape[0] > c.mask.shape[1]][0]
    assert vertical.pixels.shape[1:] == (2 + 7 + 3, 3 + 2 + 2)
    assert not vertical.pixels.flags.writeable  # plain frozen data


def test_pool_takes_torch_and_refuses_bad_inputs():
    images, masks = _clean_batch(2)
    masks[0, 1:3, 1:3] = 1
    pool = defect_pool(torch.from_numpy(images), torch.from_numpy(masks), CLASSES)
    assert pool.counts == (0, 1, 0, 0)
    with pytest.raises(DataError, match="uint8"):
        defect_pool(images.astype(np.float32), masks, CLASSES)
    with pytest.raises(DataError, match=r"\(N, H, W\)"):
        defect_pool(images, masks[:1], CLASSES)
    with pytest.raises(DataError, match="4 classes"):
        defect_pool(images, masks + 4, CLASSES)
    with pytest.raises(ConfigError, match="margin"):
        defect_pool(images, masks, CLASSES, margin=-1)


# --- balance (eq. 5) --------------------------------------------------------------------------------


def _image_counts(masks, classes=(1, 2)):
    return [int(sum((m == c).any() for m in masks)) for c in classes]


def test_every_clean_image_gets_the_rarest_class_until_the_batch_is_balanced():
    images, masks = _clean_batch(8)
    masks[:3, 0:2, 0:2] = 1  # three images already show "blob"
    images[:3, :, 0:2, 0:2] = 250
    _, out, info = inject(images, masks, _pool(), np.random.default_rng(0))
    assert [d.image for d in info] == [3, 4, 5, 6, 7]
    assert [d.class_index for d in info][:3] == [2, 2, 2]  # "line" is rarest until it catches up
    blob, line = _image_counts(out)
    assert abs(blob - line) <= 1 and line >= 3


def test_repeated_batches_equalise_the_counts():
    pool, totals = _pool(), np.zeros(2, int)
    for seed in range(24):  # one clean image per batch: always a tie, broken at random
        images, masks = _clean_batch(1, seed=seed)
        _, out, _ = inject(images, masks, pool, np.random.default_rng(seed), methods=("cutpaste",))
        totals += _image_counts(out)
    assert totals.sum() == 24 and abs(totals[0] - totals[1]) <= 8  # lowest-index ties would give 24 to 0


def test_keep_clean_one_changes_nothing_and_zero_leaves_no_clean_image():
    images, masks = _clean_batch(6)
    same_images, same_masks, info = inject(images, masks, _pool(), np.random.default_rng(0), keep_clean=1.0)
    assert info == () and np.array_equal(same_images, images) and np.array_equal(same_masks, masks)
    _, out, info = inject(images, masks, _pool(), np.random.default_rng(0), keep_clean=0.0)
    assert len(info) == 6 and all(m.any() for m in out)
    _, out, info = inject(images, masks, _pool(), np.random.default_rng(0), keep_clean=0.5)
    assert len(info) == 3 and sum(not m.any() for m in out) == 3


def test_defective_images_and_the_inputs_are_not_modified():
    images, masks = _clean_batch(5)
    masks[[1, 3], 5:8, 5:8] = 2
    before = images.copy(), masks.copy()
    out_images, out_masks, info = inject(images, masks, _pool(), np.random.default_rng(0))
    assert np.array_equal(images, before[0]) and np.array_equal(masks, before[1])
    assert sorted(d.image for d in info) == [0, 2, 4]
    for i in (1, 3):
        assert np.array_equal(out_images[i], images[i]) and np.array_equal(out_masks[i], masks[i])
    assert out_masks.dtype == masks.dtype


def test_same_seed_same_batch():
    images, masks = _clean_batch(6, channels=3)
    pool = _pool(channels=3)
    a = inject(images, masks, pool, np.random.default_rng(7))
    b = inject(images, masks, pool, np.random.default_rng(7))
    c = inject(images, masks, pool, np.random.default_rng(8))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert not np.array_equal(a[0], c[0])


# --- labels follow the pasted pixels ----------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_cutpaste_labels_are_exactly_the_changed_pixels_after_flips_rotations_and_scaling(channels):
    """A crop of constant colour on a black image: pixels changed <=> label changed, whatever the
    transform (any angle, flips, scale 0.5..2)."""
    masks = np.zeros((1, 32, 32), np.int64)
    masks[0, 10:20, 10:13] = 1
    masks[0, 17:20, 13:18] = 1
    pool = defect_pool(np.full((1, channels, 32, 32), 200, np.uint8), masks, CLASSES[:2])
    images, clean = np.zeros((8, channels, 32, 32), np.uint8), np.zeros((8, 32, 32), np.int64)
    transform = CropTransform(flip=True, rotate=180.0, scale=(0.5, 2.0))
    rng = np.random.default_rng(3)
    out, labels, info = inject(images, clean, pool, rng, methods=("cutpaste",), transform=transform)
    for image, label, done in zip(out, labels, info):
        changed = (image != 0).any(0)
        assert np.array_equal(changed, label == 1) and (image[:, changed] == 200).all()
        assert label.sum() == done.pixels
    assert len({d.pixels for d in info}) > 1  # the transforms really differed


def test_cutpaste_with_flips_pastes_a_flipped_copy_of_crop_and_mask():
    pool = _pool()
    crop = pool.crops[1][0]
    images, masks = _clean_batch(6)
    flips = CropTransform(flip=True, rotate=0.0, scale=(1.0, 1.0))
    rng = np.random.default_rng(1)
    out, labels, info = inject(images, masks, pool, rng, methods=("cutpaste",), transform=flips, classes=(1,))
    seen = set()
    for image, label, done in zip(out, labels, info):
        top, left, h, w = done.box
        window = label[top:top + h, left:left + w] == 1
        ys, xs = np.nonzero(crop.mask)
        tight = crop.mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        pixels = crop.pixels[:, ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        matches = [k for k, (m, p) in enumerate(_flips(tight, pixels)) if np.array_equal(window, m)]
        assert matches, "the label is not a flip of the crop's mask"
        flipped_pixels = _flips(tight, pixels)[matches[0]][1]
        assert np.array_equal(image[:, top:top + h, left:left + w][:, window], flipped_pixels[:, window])
        assert np.array_equal(image[:, label == 0], images[done.image][:, label == 0])
        seen.add(matches[0])
    assert len(seen) > 1


def _flips(mask, pixels):
    return [(mask, pixels), (mask[:, ::-1], pixels[:, :, ::-1]), (mask[::-1], pixels[:, ::-1]),
            (mask[::-1, ::-1], pixels[:, ::-1, ::-1])]


# --- Poisson ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("method", ["poisson", "poisson_normal"])
def test_poisson_stays_inside_the_image_and_near_the_pasted_region(channels, method):
    images, masks = _clean_batch(6, channels=channels, size=32)
    out, labels, info = inject(images, masks, _pool(channels), np.random.default_rng(0), methods=(method,))
    assert out.shape == images.shape and out.dtype == np.uint8 and labels.dtype == np.int64
    assert [d.method for d in info] == [method] * 6
    for image, before, label, done in zip(out, images, labels, info):
        assert (label != 0).sum() == done.pixels > 0
        top, left, h, w = done.box
        near = np.zeros(label.shape, bool)
        near[max(0, top - 5):top + h + 5, max(0, left - 5):left + w + 5] = True  # Omega = defect grown by 4
        changed = (image != before).any(0)
        assert changed.any() and not (changed & ~near).any()
        # the defect is visible: bright blobs brighter, dark lines darker than the texture around
        inside = image[:, label != 0].astype(float).mean()
        assert (inside > 150) if done.class_index == 1 else (inside < 70)


def test_poisson_handles_tiny_images_and_crops_larger_than_the_target():
    masks = np.zeros((1, 40, 40), np.int64)
    masks[0, 2:38, 5:35] = 1  # a defect larger than the 8x8 and 12x12 targets
    pool = defect_pool(_texture(1, 3, 40), masks, CLASSES[:2])
    for size in (3, 8, 12):
        images, clean = _clean_batch(3, channels=3, size=size)
        out, labels, info = inject(images, clean, pool, np.random.default_rng(size), methods=("poisson",))
        assert out.shape == images.shape and all(m.any() for m in labels)
        assert all(d.method in ("poisson", "cutpaste") for d in info)


def test_poisson_labels_exactly_the_defect_inside_and_never_addresses_pixels_outside_the_image():
    target = _texture(1, 3, 20)[0].transpose(1, 2, 0)
    pixels = np.full((15, 15, 3), 100, np.uint8)
    mask = np.zeros((15, 15), bool)
    mask[5:10, 6:9] = True
    pixels[mask] = 250
    out, label = poisson_paste(target, pixels, mask, 2, 3, flag=cv2.MIXED_CLONE)
    expected = np.zeros((20, 20), bool)
    expected[7:12, 9:12] = True  # the mask moved by (2, 3): every defect pixel, nothing else
    assert np.array_equal(label, expected) and out[label].mean() > 200
    for top, left in [(-10, -10), (12, 12), (-4, 14), (14, -9)]:  # hanging over every corner
        result = poisson_paste(target, pixels, mask, top, left, flag=cv2.NORMAL_CLONE)
        if result is not None:
            out, label = result
            assert out.shape == target.shape and label.shape == target.shape[:2] and label.any()


# --- errors and the hook ----------------------------------------------------------------------------


def test_clear_errors():
    images, masks = _clean_batch(2)
    empty = DefectPool(CLASSES, ((), (), (), ()))
    with pytest.raises(DataError, match="no crop of any class"):
        inject(images, masks, empty, np.random.default_rng(0))
    assert inject(images, masks, empty, np.random.default_rng(0), keep_clean=1.0)[2] == ()
    with pytest.raises(DataError, match="class 'none'"):
        inject(images, masks, _pool(), np.random.default_rng(0), classes=(3,))
    with pytest.raises(ConfigError, match="methods"):
        inject(images, masks, _pool(), np.random.default_rng(0), methods=("blur",))
    with pytest.raises(ConfigError, match="classes="):
        inject(images, masks, _pool(), np.random.default_rng(0), classes=("blob",))
    with pytest.raises(ConfigError, match="keep_clean"):
        inject(images, masks, _pool(), np.random.default_rng(0), keep_clean=1.5)
    with pytest.raises(DataError, match=r"\(N, C, H, W\)"):
        inject(images[:, 0], masks, _pool(), np.random.default_rng(0))
    with pytest.raises(DataError, match=r"\(N, H, W\)"):
        inject(images, masks[:, :5], _pool(), np.random.default_rng(0))
    with pytest.raises(DataError, match="channel"):
        inject(np.repeat(images, 3, 1), masks, _pool(), np.random.default_rng(0))
    with pytest.raises(ConfigError, match="scale"):
        CropTransform(scale=(2.0, 1.0))


def test_hook_on_torch_tensors():
    pool = _pool()
    augment = DynamicLabelInjection(pool, methods=("poisson", "cutpaste"))
    images, masks = (torch.from_numpy(a) for a in _clean_batch(4))
    masks[0, 1:3, 1:3] = 1
    a_images, a_masks = augment(images, masks, torch.Generator().manual_seed(0))
    b_images, b_masks = augment(images, masks, torch.Generator().manual_seed(0))
    assert a_images.dtype == torch.uint8 and a_masks.dtype == torch.int64 and a_images.shape == images.shape
    assert torch.equal(a_images, b_images) and torch.equal(a_masks, b_masks)
    assert all(bool(m.any()) for m in a_masks) and not bool(masks[1:].any())  # inputs untouched
    full = masks.clone()
    full[:, 0, 0] = 2
    assert augment(images, full, torch.Generator())[0] is images  # nothing to fill: no copy
    with pytest.raises(DataError, match="no crop of any class"):
        DynamicLabelInjection(DefectPool(CLASSES, ((), (), (), ())))
    with pytest.raises(DataError, match="class 'none'"):
        DynamicLabelInjection(pool, classes=(1, 3))
    with pytest.raises(DataError, match="uint8"):
        augment(images.float(), masks, torch.Generator())


def test_hook_on_numpy_and_a_pool_from_an_image_dataset(synthetic_folder):
    """The intended path: pool from a training ImageDataset, hook on a batch of its items."""
    train = ImageDataset(scan_folder(synthetic_folder), ImageSpec(size=(32, 32), channels=1))
    pool = defect_pool(train.raw_images(), train.class_masks(), train.classes)
    assert pool.classes == ("background", "scratch", "spot") and min(pool.counts[1:]) >= 1
    augment = DynamicLabelInjection(pool, keep_clean=0.25)
    normal = np.flatnonzero(train.labels == 0)[:8]
    images, masks = train.raw_images()[normal].numpy(), train.class_masks()[normal]
    out_images, out_masks, info = augment.apply(images, masks, np.random.default_rng(0))
    assert isinstance(out_images, np.ndarray) and len(info) == 6  # 8 clean images, 2 kept
    assert sorted(np.unique(out_masks).tolist()) == [0, 1, 2]
    defective = np.ones_like(masks)
    assert augment(images, defective, 0)[1] is defective
