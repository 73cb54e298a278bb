"""Pixel-level metrics for anomaly maps against ground-truth defect masks.

- pixel AUROC: every pixel is one sample.
- AUPRO (MVTec AD): area under the per-region-overlap curve up to a false-positive rate `max_fpr`,
  divided by `max_fpr`. Each connected defect region counts equally, however small, which pixel AUROC
  does not do (there, one large defect outweighs many small ones).
- Dice / IoU of the binarised maps, pooled over all pixels of the set (micro average).

`pixel_metrics_where` and `pixel_threshold_max_dice(available=...)` leave out the images whose ground
truth is unknown (anomalous images without a mask), whose empty masks would otherwise count as normal.

Curves are computed from per-threshold counts: pixels are bucketed by threshold with
`np.searchsorted` and counted with `np.bincount`, then cumulated from the highest threshold down.
Up to `max_pixels` pixels the thresholds are all distinct map values (exact); above it, a grid of
quantiles from a seeded subsample, still counted over all pixels.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from defectmine.errors import ConfigError
from defectmine.evaluation._validate import binary_array, score_array, threshold_value
from defectmine.evaluation.metrics import UndefinedMetricWarning

# 8-connectivity inside each image (as the MVTec AD reference code); no links across the stack axis.
_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_STRUCTURE[1] = True

# Quantile levels of the threshold grid used above max_pixels.
_GRID_LEVELS = np.linspace(0.0, 1.0, 1001)


def _masks_and_maps(masks: Any, maps: Any) -> tuple[np.ndarray, np.ndarray]:
    m = binary_array(masks, "masks")
    a = score_array(maps, "maps")
    if m.ndim != 3:
        raise ConfigError(
            f"masks must have shape (N, H, W), got {m.shape}; drop a channel axis with "
            "masks[:, 0] or add a batch axis with masks[None]."
        )
    if a.shape != m.shape:
        raise ConfigError(
            f"maps have shape {a.shape} but masks have shape {m.shape}; they must match. Upsample the "
            "anomaly maps to the mask size (defectmine.explain) before evaluating."
        )
    if m.size == 0:
        raise ConfigError(f"masks and maps are empty (shape {m.shape}); evaluate at least one pixel.")
    return m, a


def _check_max_pixels(max_pixels: Any) -> int:
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels < 2:
        raise ConfigError(f"max_pixels must be an integer >= 2, got {max_pixels!r}.")
    return int(max_pixels)


def _sample(values: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if values.size <= n:
        return values
    return values[rng.choice(values.size, size=n, replace=False)]


def _thresholds(
    values: np.ndarray, positive: np.ndarray, max_pixels: int, max_fpr: float, rng: np.random.Generator
) -> tuple[np.ndarray, bool]:
    """Ascending candidate thresholds and whether they are a subsampled grid rather than exact."""
    if values.size <= max_pixels:
        return np.unique(values), False
    sample_idx = rng.choice(values.size, size=max_pixels, replace=False)
    sample, sample_pos = values[sample_idx], positive[sample_idx]
    pos = _sample(values[positive], max_pixels, rng)  # all positives when rare, so never empty
    neg = sample[~sample_pos]
    parts = [np.quantile(sample, _GRID_LEVELS), [values.max()]]
    if pos.size:
        parts.append(np.quantile(pos, _GRID_LEVELS))
    if neg.size:
        # Dense where the normal pixels' false-positive rate lies in [0, max_fpr]: the AUPRO range.
        parts.append(np.quantile(neg, 1.0 - np.linspace(0.0, min(1.0, 1.1 * max_fpr), 1001)))
    return np.unique(np.concatenate(parts).astype(values.dtype)), True


def _counts_at_or_above(
    values: np.ndarray, thresholds: np.ndarray, weights: list[np.ndarray | None]
) -> list[np.ndarray]:
    """For each weight array w: out[j] = sum of w over pixels with value >= thresholds[j]."""
    idx = np.searchsorted(thresholds, values, side="right") - 1  # largest threshold <= value
    keep = idx >= 0
    idx_kept = idx[keep]
    out = []
    for w in weights:
        counts = np.bincount(
            idx_kept, weights=None if w is None else w[keep], minlength=thresholds.size
        )
        out.append(np.cumsum(counts[::-1])[::-1])
    return out


def _area_up_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoid area under y(x) for x in [0, limit]; x non-decreasing from 0, with x[-1] >= limit."""
    i = int(np.searchsorted(x, limit, side="right"))
    xs, ys = x[:i], y[:i]
    if i < x.size:
        # x[i - 1] <= limit < x[i]: close the area with the interpolated point at x = limit.
        x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
        xs = np.append(xs, limit)
        ys = np.append(ys, y0 + (y1 - y0) * (limit - x0) / (x1 - x0))
    return float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1])) / 2.0)


def _aupro(
    masks: np.ndarray, values: np.ndarray, thresholds: np.ndarray, max_fpr: float
) -> tuple[float, int]:
    """AUPRO normalised by max_fpr, and the number of ground-truth regions."""
    regions, n_regions = ndimage.label(masks, structure=_STRUCTURE)
    regions = regions.ravel()
    sizes = np.bincount(regions)
    region_weight = np.zeros(n_regions + 1)
    # Each region contributes its overlap fraction / n_regions, so PRO(t) is the mean over regions.
    region_weight[1:] = 1.0 / (sizes[1:] * n_regions)
    normal = regions == 0
    neg_ge, pro_ge = _counts_at_or_above(
        values, thresholds, [normal.astype(np.float64), region_weight[regions]]
    )
    # From the highest threshold down, framed by (0, 0) at +inf and (1, 1) at -inf.
    fpr = np.concatenate([[0.0], neg_ge[::-1] / normal.sum(), [1.0]])
    pro = np.concatenate([[0.0], np.clip(pro_ge[::-1], 0.0, 1.0), [1.0]])
    return _area_up_to(fpr, pro, max_fpr) / max_fpr, int(n_regions)


def pixel_metrics(
    masks: Any,
    maps: Any,
    threshold: float | None = None,
    *,
    max_fpr: float = 0.3,
    max_pixels: int = 4_000_000,
    seed: int = 0,
) -> dict:
    """Pixel-level segmentation metrics of anomaly maps.

    Args:
        masks: ground truth, bool or 0/1, shape (N, H, W).
        maps: anomaly maps, float, same shape as masks (upsample them first).
        threshold: if given (a number or a `Threshold`), also report Dice and IoU of
            `maps >= threshold`, pooled over all pixels.
        max_fpr: AUPRO integration limit on the false-positive rate (0.3 as in MVTec AD).
        max_pixels: above this many pixels, pixel AUROC uses a seeded subsample (all positives up to
            max_pixels // 2, the rest negatives: AUROC does not depend on class balance) and AUPRO
            uses a quantile grid of thresholds; "pixel_subsampled" is then True.
        seed: seed for that subsampling.

    Returns:
        {"pixel_auroc", "aupro", "max_fpr", "n_pixels", "n_anomalous_pixels", "n_regions",
         "pixel_subsampled"} plus {"dice", "iou", "threshold"} when a threshold is given.
        pixel_auroc and aupro are None (with an UndefinedMetricWarning) when there are no
        anomalous or no normal pixels; dice and iou are None when there are neither anomalous
        nor predicted pixels.

        A constant map scores aupro = max_fpr / 2 = 0.15 (the chance diagonal PRO = FPR) and a
        perfect map 1.0.

    Raises:
        ConfigError: shapes differ or are not (N, H, W), masks not 0/1, NaN/infinite maps, or
            max_fpr outside (0, 1].
    """
    m, a = _masks_and_maps(masks, maps)
    max_pixels = _check_max_pixels(max_pixels)
    max_fpr = threshold_value(max_fpr, "max_fpr")
    if not 0.0 < max_fpr <= 1.0:
        raise ConfigError(f"max_fpr must be in (0, 1], got {max_fpr}; MVTec AD uses 0.3.")
    rng = np.random.default_rng(seed)
    values, positive = a.ravel(), m.ravel()
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos

    result: dict[str, Any] = {
        "pixel_auroc": None,
        "aupro": None,
        "max_fpr": max_fpr,
        "n_pixels": int(values.size),
        "n_anomalous_pixels": n_pos,
        "n_regions": 0,
        "pixel_subsampled": False,
    }
    if n_pos == 0 or n_neg == 0:
        kind = "anomalous" if n_neg == 0 else "normal"
        warnings.warn(
            f"All {values.size} pixels are {kind}: pixel AUROC and AUPRO need both defect and "
            "normal pixels, so they are reported as None.",
            UndefinedMetricWarning,
            stacklevel=2,
        )
    else:
        if values.size > max_pixels:
            n_pos_keep = min(n_pos, max_pixels // 2)
            pos = _sample(values[positive], n_pos_keep, rng)
            neg = _sample(values[~positive], max_pixels - n_pos_keep, rng)
            y = np.concatenate([np.ones(pos.size, bool), np.zeros(neg.size, bool)])
            result["pixel_auroc"] = float(roc_auc_score(y, np.concatenate([pos, neg])))
            result["pixel_subsampled"] = True
        else:
            result["pixel_auroc"] = float(roc_auc_score(positive, values))
        thresholds, _ = _thresholds(values, positive, max_pixels, max_fpr, rng)
        result["aupro"], result["n_regions"] = _aupro(m, values, thresholds, max_fpr)

    if threshold is not None:
        t = threshold_value(threshold)
        pred = values >= t
        tp = int(np.count_nonzero(pred & positive))
        fp = int(np.count_nonzero(pred)) - tp
        fn = n_pos - tp
        denom = tp + fp + fn
        result["dice"] = 2 * tp / (2 * tp + fp + fn) if denom else None
        result["iou"] = tp / denom if denom else None
        result["threshold"] = t
    return result


def _available(available: Any, n_images: int) -> np.ndarray:
    keep = binary_array(available, "available")
    if keep.shape != (n_images,):
        raise ConfigError(
            f"available must be one bool per image, shape ({n_images},), got {keep.shape}; pass e.g. "
            "dataset.mask_available."
        )
    return keep


def _where(masks: Any, maps: Any, available: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """Masks and maps of the available images only, and how many images were left out."""
    m, a = _masks_and_maps(masks, maps)
    if available is None:
        return m, a, 0
    keep = _available(available, m.shape[0])
    if keep.all():
        return m, a, 0  # no copy of a large stack when every image has its mask
    return m[keep], a[keep], int(np.count_nonzero(~keep))


def pixel_metrics_where(
    masks: Any,
    maps: Any,
    available: Any,
    threshold: float | None = None,
    *,
    max_fpr: float = 0.3,
    max_pixels: int = 4_000_000,
    seed: int = 0,
) -> dict | None:
    """`pixel_metrics` over the images whose ground truth is known, leaving the others out.

    An anomalous image without a mask has an all-background row in `masks` that is unknown, not
    normal: counted, its defect would score as false positives. Pass `available` (bool (N,), e.g.
    `dataset.mask_available`: True for images with a mask and for normal images) to evaluate only
    those.

    Returns:
        `pixel_metrics` of the available images plus "n_images" (evaluated) and
        "n_images_without_mask" (left out); None when no evaluated image has a defect pixel (no
        anomalous image has a mask), so that no metric is reported over normal pixels only.

    Raises:
        ConfigError: as `pixel_metrics`, or `available` not one 0/1 value per image.
    """
    m, a, n_left_out = _where(masks, maps, available)
    if m.shape[0] == 0 or not m.any():
        return None
    result = pixel_metrics(m, a, threshold, max_fpr=max_fpr, max_pixels=max_pixels, seed=seed)
    result["n_images"] = int(m.shape[0])
    result["n_images_without_mask"] = n_left_out
    return result


def pixel_threshold_max_dice(
    masks: Any, maps: Any, *, available: Any = None, max_pixels: int = 4_000_000, seed: int = 0
) -> float:
    """Pixel threshold maximising Dice of `maps >= threshold` against masks, over all pixels.

    Fit it on validation masks and maps, then pass it to `pixel_metrics` on the test set. The
    candidates are all distinct map values (or, above max_pixels, a quantile grid); among equally
    good candidates the lowest is returned. `available` (bool (N,), e.g. `dataset.mask_available`)
    restricts the choice to images whose ground truth is known, as in `pixel_metrics_where`.

    Raises:
        ConfigError: bad shapes (see `pixel_metrics`), or no defect pixel in the (available) masks.
    """
    m, a, n_left_out = _where(masks, maps, available)
    max_pixels = _check_max_pixels(max_pixels)
    values, positive = a.ravel(), m.ravel()
    n_pos = int(positive.sum())
    if n_pos == 0:
        left_out = f" ({n_left_out} anomalous image(s) without a mask left out)" if n_left_out else ""
        raise ConfigError(
            "pixel_threshold_max_dice needs defect pixels in the validation masks, but all masks are "
            f"empty{left_out}. Add validation images with masks, or pass a fixed pixel threshold."
        )
    thresholds, _ = _thresholds(values, positive, max_pixels, 0.3, np.random.default_rng(seed))
    tp_ge, pred_ge = _counts_at_or_above(values, thresholds, [positive.astype(np.float64), None])
    dice = 2.0 * tp_ge / (pred_ge + n_pos)
    return float(thresholds[int(np.argmax(dice))])


__all__ = ["pixel_metrics", "pixel_metrics_where", "pixel_threshold_max_dice"]
