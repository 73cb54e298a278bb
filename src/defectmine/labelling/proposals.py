"""Mask proposals from any detector's maps: threshold (chosen on validation), morphology, connected
components, minimum area; each proposal with a confidence. And how good proposals are: per defect
(a connected component of the true mask), the IoU of the proposal that overlaps it best.

    maps = source_maps(detector, val, "native")               # or "gradcam"; a segmenter: "segmenter"
    settings = choose_settings(maps, val.masks())              # validation images only
    found = propose(source_maps(detector, test, "native")[0], settings)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from defectmine.data.images import ImageSpec, content_geometry
from defectmine.errors import ConfigError, DataError

SOURCES = ("native", "gradcam", "segmenter")
_LEVELS = np.linspace(0.0, 1.0, 1001)


@dataclass(frozen=True)
class ProposalSettings:
    """How a map becomes proposals.

    threshold: map values above it are defect candidates (choose it on validation: `choose_settings`).
    open_px / close_px: radius of the morphological opening (drops specks) and closing (joins gaps).
    min_area: components smaller than this many pixels are dropped.
    reference: sorted quantiles of validation map values; a proposal's confidence is the share of
        validation pixels below its peak (in [0, 1]); None: the raw peak value.
    """

    threshold: float
    open_px: int = 1
    close_px: int = 1
    min_area: int = 4
    reference: tuple[float, ...] | None = None

    def confidence(self, peak: float) -> float:
        if self.reference is None:
            return float(peak)
        return float(np.interp(peak, np.asarray(self.reference), _LEVELS))


@dataclass
class Proposal:
    """One proposed defect region: a bool mask of the map's size, its confidence and area in pixels."""

    mask: np.ndarray
    confidence: float
    area: int


def _kernel(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def propose(amap: np.ndarray, settings: ProposalSettings) -> list[Proposal]:
    """Proposals of one map (H, W): its thresholded, opened and closed pixels split into 8-connected
    components of at least `min_area` pixels, highest confidence first."""
    amap = np.asarray(amap, dtype=np.float32)
    if amap.ndim != 2:
        raise DataError(f"propose: a map must be 2-d (height, width), got shape {amap.shape}.")
    binary = (amap > settings.threshold).astype(np.uint8)
    if settings.open_px > 0:
        binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, _kernel(settings.open_px))
    if settings.close_px > 0:
        binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, _kernel(settings.close_px))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    found = []
    for component in range(1, n):
        area = int(stats[component, cv2.CC_STAT_AREA])
        if area < settings.min_area:
            continue
        mask = labels == component
        found.append(Proposal(mask, settings.confidence(float(amap[mask].max())), area))
    return sorted(found, key=lambda p: -p.confidence)


def defect_ious(proposals: list[Proposal], truth: np.ndarray) -> list[float]:
    """Per defect of `truth` (each 8-connected component of its defect pixels): the IoU of the proposal
    that overlaps it best (0 when none does)."""
    truth = np.asarray(truth) > 0
    n, labels = cv2.connectedComponents(truth.astype(np.uint8), connectivity=8)
    ious = []
    for component in range(1, n):
        defect = labels == component
        best = 0.0
        for proposal in proposals:
            overlap = np.count_nonzero(defect & proposal.mask)
            if overlap:
                best = max(best, overlap / np.count_nonzero(defect | proposal.mask))
        ious.append(best)
    return ious


def measure(maps: np.ndarray, masks: np.ndarray, settings: ProposalSettings) -> dict:
    """Mean proposal IoU over all defects of `masks`, the share with IoU >= 0.5, the number of defects,
    and proposals per image."""
    ious, n_proposals = [], 0
    for amap, truth in zip(maps, masks):
        found = propose(amap, settings)
        n_proposals += len(found)
        ious += defect_ious(found, truth)
    ious = np.asarray(ious, dtype=float)
    return {"mean_iou": float(ious.mean()) if ious.size else float("nan"),
            "share_iou_50": float((ious >= 0.5).mean()) if ious.size else float("nan"),
            "defects": int(ious.size), "proposals_per_image": n_proposals / max(1, len(maps))}


def choose_settings(val_maps: np.ndarray, val_masks: np.ndarray, *, candidates: int = 40, open_px: int = 1,
                    close_px: int = 1, min_area: int = 4) -> ProposalSettings:
    """Settings whose threshold gives the best mean proposal IoU on validation images with defects.

    Candidates are quantiles (50% ... 99.9%) of the validation map values; the confidence reference is
    the validation maps' value distribution. Pass validation maps only: never the images you report on."""
    val_maps, val_masks = np.asarray(val_maps, dtype=np.float32), np.asarray(val_masks) > 0
    if val_maps.shape != val_masks.shape or val_maps.ndim != 3:
        raise DataError(f"choose_settings: maps {val_maps.shape} and masks {val_masks.shape} must both be (N, H, W).")
    defective = val_masks.reshape(len(val_masks), -1).any(axis=1)
    if not defective.any():
        raise DataError("choose_settings: no validation image has a defect mask. Fix: label (mask) a few defects "
                        "first, or pass the threshold yourself (ProposalSettings(threshold=...)).")
    reference = tuple(float(v) for v in np.quantile(val_maps, _LEVELS))
    base = ProposalSettings(threshold=0.0, open_px=open_px, close_px=close_px, min_area=min_area, reference=reference)
    levels = 1.0 - np.geomspace(0.5, 0.001, candidates)  # denser near the top, where defects are
    best, best_iou = None, -1.0
    for threshold in np.unique(np.quantile(val_maps[defective], levels)):
        settings = replace(base, threshold=float(threshold))
        iou = measure(val_maps[defective], val_masks[defective], settings)["mean_iou"]
        if iou > best_iou:
            best, best_iou = settings, iou
    return best


def to_image_size(amap: np.ndarray, spec: ImageSpec, height: int, width: int) -> np.ndarray:
    """A map at the model's input size back on the original image (height, width): the letterbox
    (resize "pad") is cut off, then the map is resized bilinearly."""
    new_h, new_w, top, left = content_geometry(height, width, spec)
    content = np.asarray(amap, dtype=np.float32)[top:top + new_h, left:left + new_w]
    return cv2.resize(content, (width, height), interpolation=cv2.INTER_LINEAR)


def source_maps(model, images, source: str) -> np.ndarray:
    """Maps (N, H, W) at the model's input size: "native" (a detector's own maps), "gradcam" (Grad-CAM
    of a trained detector's image score) or "segmenter" (1 - background probability of a segmenter)."""
    if source not in SOURCES:
        raise ConfigError(f"map source {source!r} is unknown. Fix: use one of {', '.join(SOURCES)}.")
    if source == "segmenter":
        return np.asarray(model.predict(images).anomaly_map(), dtype=np.float32)
    maps = model.score(images, heatmap=source).maps
    if maps is None:
        raise ConfigError(f"{type(model).__name__} gives no maps. Fix: use a detector with anomaly maps "
                          "(fcdd), or source 'gradcam'.")
    return np.asarray(maps, dtype=np.float32)
