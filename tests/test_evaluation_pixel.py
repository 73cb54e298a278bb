import json

import cv2
import numpy as np
import pytest
from sklearn.metrics import auc, roc_auc_score

from defectmine.errors import ConfigError
from defectmine.evaluation import UndefinedMetricWarning, pixel_metrics, pixel_metrics_where, pixel_threshold_max_dice


def reference_aupro(masks, maps, max_fpr):
    """Direct, loop-based AUPRO: one threshold at a time, regions from cv2 (8-connectivity)."""
    regions = []
    for mask, amap in zip(masks, maps):
        n, lab = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        regions += [amap[lab == r] for r in range(1, n)]
    normal = maps[~masks]
    fprs, pros = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        fprs.append(np.mean(normal >= t))
        pros.append(np.mean([np.mean(r >= t) for r in regions]))
    fprs, pros = np.array(fprs), np.array(pros)
    keep = fprs <= max_fpr
    x, y = fprs[keep], pros[keep]
    if x[-1] < max_fpr:
        j = np.argmax(fprs > max_fpr)
        y_lim = np.interp(max_fpr, [fprs[j - 1], fprs[j]], [pros[j - 1], pros[j]])
        x, y = np.append(x, max_fpr), np.append(y, y_lim)
    return auc(x, y) / max_fpr


def two_region_case():
    masks = np.zeros((1, 20, 20), dtype=bool)
    masks[0, 0:10, 0:10] = True  # large region: 100 pixels
    masks[0, 15:17, 15:17] = True  # small region: 4 pixels
    maps = np.full(masks.shape, 0.5)
    maps[0, 0:10, 0:10] = 1.0  # large region found above every normal pixel
    maps[0, 15:17, 15:17] = 0.0  # small region scored below every normal pixel
    return masks, maps


def random_case(seed, n=3, size=16):
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(n):
        for _ in range(2):
            y, x = rng.integers(0, size - 4, 2)
            h, w = rng.integers(1, 5, 2)
            masks[i, y : y + h, x : x + w] = True
    maps = rng.random(masks.shape) + 0.8 * masks
    return masks, np.round(maps, 2)  # rounding makes ties


def test_perfect_map_gives_one():
    masks, _ = random_case(0)
    m = pixel_metrics(masks, masks.astype(np.float32), threshold=0.5)
    assert m["aupro"] == pytest.approx(1.0)
    assert m["pixel_auroc"] == 1.0
    assert m["dice"] == 1.0 and m["iou"] == 1.0


def test_constant_map_gives_chance_aupro():
    # Every threshold flags all pixels or none: the curve is the diagonal PRO = FPR, whose area up to
    # max_fpr, divided by max_fpr, is max_fpr / 2.
    masks, _ = random_case(1)
    m = pixel_metrics(masks, np.zeros(masks.shape))
    assert m["aupro"] == pytest.approx(0.15)
    assert m["pixel_auroc"] == 0.5
    assert pixel_metrics(masks, np.zeros(masks.shape), max_fpr=0.1)["aupro"] == pytest.approx(0.05)


def test_two_regions_of_different_sizes_weigh_equally():
    # Up to FPR 0.3, the large region is fully detected and the small one not at all: PRO = 1/2
    # throughout, so AUPRO = 0.5 although 100 of the 104 defect pixels are found.
    masks, maps = two_region_case()
    m = pixel_metrics(masks, maps)
    assert m["n_regions"] == 2
    assert m["aupro"] == pytest.approx(0.5)
    assert m["pixel_auroc"] == pytest.approx(100 / 104)


def test_regions_use_eight_connectivity_within_images_only():
    masks = np.zeros((2, 6, 6), dtype=bool)
    masks[0, 0, 0] = masks[0, 1, 1] = True  # diagonal neighbours: one region
    masks[1, 0, 0] = True  # same place in the next image: a separate region
    assert pixel_metrics(masks, masks.astype(float))["n_regions"] == 2


@pytest.mark.parametrize("seed", range(3))
def test_aupro_matches_loop_reference(seed):
    masks, maps = random_case(seed)
    for max_fpr in (0.3, 0.05, 1.0):
        got = pixel_metrics(masks, maps, max_fpr=max_fpr)["aupro"]
        assert got == pytest.approx(reference_aupro(masks, maps, max_fpr), abs=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_pixel_auroc_matches_sklearn(seed):
    masks, maps = random_case(seed)
    m = pixel_metrics(masks, maps)
    assert m["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()))
    assert m["pixel_subsampled"] is False


def test_subsampling_above_max_pixels_is_close_and_seeded():
    masks, maps = random_case(3, n=4, size=32)
    maps = maps + np.random.default_rng(0).random(maps.shape) * 1e-3  # distinct values
    exact = pixel_metrics(masks, maps)
    sub = pixel_metrics(masks, maps, max_pixels=1000, seed=1)
    assert sub["pixel_subsampled"] is True
    assert sub["pixel_auroc"] == pytest.approx(exact["pixel_auroc"], abs=0.03)
    assert sub["aupro"] == pytest.approx(exact["aupro"], abs=0.02)
    assert pixel_metrics(masks, maps, max_pixels=1000, seed=1) == sub


def test_dice_and_iou_hand_computed():
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[0, 0, :4] = True  # 4 defect pixels
    maps = np.zeros(masks.shape)
    maps[0, 0, :2] = 0.9  # 2 true positives
    maps[1, 3, :2] = 0.9  # 2 false positives, in another image: pooled over the set
    m = pixel_metrics(masks, maps, threshold=0.9)
    # tp 2, fp 2, fn 2: Dice 4 / 8, IoU 2 / 6.
    assert m["dice"] == pytest.approx(0.5)
    assert m["iou"] == pytest.approx(1 / 3)
    assert m["threshold"] == 0.9


def test_no_defect_pixels_gives_none_and_warns():
    masks = np.zeros((2, 4, 4), dtype=bool)
    with pytest.warns(UndefinedMetricWarning, match="normal"):
        m = pixel_metrics(masks, np.random.default_rng(0).random(masks.shape), threshold=0.5)
    assert m["pixel_auroc"] is None and m["aupro"] is None
    assert m["dice"] == 0.0  # predicted pixels but no defect
    json.dumps(m)


def test_shape_mismatch_rejected():
    with pytest.raises(ConfigError, match="Upsample"):
        pixel_metrics(np.zeros((1, 4, 4), bool), np.zeros((1, 8, 8)))


def test_wrong_rank_rejected():
    with pytest.raises(ConfigError, match=r"\(N, H, W\)"):
        pixel_metrics(np.zeros((1, 1, 4, 4), bool), np.zeros((1, 1, 4, 4)))


def test_nan_maps_rejected():
    maps = np.zeros((1, 4, 4))
    maps[0, 0, :3] = np.nan
    with pytest.raises(ConfigError, match="3 NaN"):
        pixel_metrics(np.zeros((1, 4, 4), bool), maps)


def test_bad_max_fpr_rejected():
    masks, maps = two_region_case()
    with pytest.raises(ConfigError, match="max_fpr"):
        pixel_metrics(masks, maps, max_fpr=0.0)


def brute_force_max_dice(masks, maps):
    def dice(t):
        pred = maps >= t
        return 2 * np.sum(pred & masks) / (pred.sum() + masks.sum())

    return max(np.unique(maps), key=dice), dice


@pytest.mark.parametrize("seed", range(3))
def test_max_dice_threshold_matches_brute_force(seed):
    masks, maps = random_case(seed)
    t = pixel_threshold_max_dice(masks, maps)
    best, dice = brute_force_max_dice(masks, maps)
    assert dice(t) == pytest.approx(dice(best))
    assert pixel_metrics(masks, maps, threshold=t)["dice"] == pytest.approx(dice(best))


def test_max_dice_threshold_hand_computed():
    masks = np.array([[[True, True, False, False]]])
    maps = np.array([[[0.9, 0.6, 0.7, 0.1]]])
    # t=0.9: Dice 2/3; t=0.7: 2/4; t=0.6: 4/5 (best); t=0.1: 4/6.
    assert pixel_threshold_max_dice(masks, maps) == 0.6


def test_max_dice_threshold_needs_defects():
    with pytest.raises(ConfigError, match="defect pixels"):
        pixel_threshold_max_dice(np.zeros((1, 4, 4), bool), np.zeros((1, 4, 4)))


# ---------------------------------------------------------------- images without masks left out


def masked_and_unmasked_case():
    """4 images with known masks (2 normal, 2 anomalous), then 2 anomalous images without a mask whose
    (unknown) defects the maps find: counted as normal pixels, they would be false positives."""
    masks, maps = random_case(5, n=4)
    masks[:2] = False
    unknown_maps = np.random.default_rng(6).random((2, 16, 16)) * 0.5
    unknown_maps[:, 2:14, 2:14] = 1.5  # a detected defect that no mask records
    all_masks = np.concatenate([masks, np.zeros((2, 16, 16), bool)])
    all_maps = np.concatenate([maps, unknown_maps])
    available = np.array([True] * 4 + [False] * 2)
    return all_masks, all_maps, available


def test_unmasked_images_are_left_out():
    masks, maps, available = masked_and_unmasked_case()
    got = pixel_metrics_where(masks, maps, available, threshold=0.9)
    expected = pixel_metrics(masks[:4], maps[:4], threshold=0.9)
    assert got == {**expected, "n_images": 4, "n_images_without_mask": 2}
    naive = pixel_metrics(masks, maps, threshold=0.9)  # what counting them as normal would give
    assert naive["aupro"] < got["aupro"] and naive["dice"] < got["dice"]
    json.dumps(got)


def test_all_available_is_plain_pixel_metrics():
    masks, maps = random_case(2)
    got = pixel_metrics_where(masks, maps, np.ones(3, bool), threshold=0.5)
    assert got == {**pixel_metrics(masks, maps, threshold=0.5), "n_images": 3, "n_images_without_mask": 0}


def test_no_anomalous_image_with_a_mask_gives_none():
    masks, maps, available = masked_and_unmasked_case()
    masks[:4] = False  # the available images are all normal
    assert pixel_metrics_where(masks, maps, available) is None
    assert pixel_metrics_where(masks[4:], maps[4:], available[4:]) is None  # nothing available at all


def test_threshold_choice_leaves_unmasked_images_out():
    masks, maps, available = masked_and_unmasked_case()
    t = pixel_threshold_max_dice(masks, maps, available=available)
    assert t == pixel_threshold_max_dice(masks[:4], maps[:4])
    assert t != pixel_threshold_max_dice(masks, maps)
    masks[:4] = False
    with pytest.raises(ConfigError, match="2 anomalous image"):
        pixel_threshold_max_dice(masks, maps, available=available)


def test_available_must_be_one_flag_per_image():
    masks, maps, _ = masked_and_unmasked_case()
    with pytest.raises(ConfigError, match=r"one bool per image, shape \(6,\)"):
        pixel_metrics_where(masks, maps, np.ones(5, bool))
    with pytest.raises(ConfigError, match="available"):
        pixel_metrics_where(masks, maps, np.full(6, 2))
