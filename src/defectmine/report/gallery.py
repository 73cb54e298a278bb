"""Image galleries of the run report: the top-scoring images and the worst errors at the threshold.

A tile is a heatmap overlay and, when the image has a ground-truth mask, the image with the mask's
outline beside it, so that where the detector looked and where the defect is can be compared at a
glance. Everything here is pure: it returns index arrays, images or HTML strings; ``report.run`` and
``report.html`` put them on the page.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from defectmine.errors import ConfigError
from defectmine.report.files import encode_png
from defectmine.report.markup import _esc, format_value, img_tag, table_html

#: Outline colour of ground-truth masks: green reads well on grey images and is not in the
#: jet colormap's hot end, so it is never mistaken for heat.
MASK_COLOR = (0, 220, 0)


@dataclass
class ReportImage:
    """One gallery tile: an image with its heatmap already blended in (see ``explain.overlay``), and
    optionally its ground-truth mask (drawn as an outline beside the heatmap)."""

    name: str
    overlay: np.ndarray  # uint8 (H, W, 3) RGB
    score: float
    label: str  # "normal" / "anomalous"
    group: str  # defect class, or "normal"
    mask: np.ndarray | None = None  # bool (H, W): the ground truth, when the image has one
    image: np.ndarray | None = None  # uint8 (H, W, 3) RGB without heatmap, for the mask panel


def worst_errors(labels, scores, threshold: float | None, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the worst false positives and false negatives at `threshold` (anomalous means
    ``score >= threshold``), at most `n` of each.

    False positives are normal images at or above the threshold, highest score first; false
    negatives are anomalous images below it, lowest score first. Non-finite scores are left out.
    Labels are 0/1 (1 = anomalous).

    Raises:
        ConfigError: labels and scores of different lengths, a missing or non-finite threshold.
    """
    y = np.asarray(labels).astype(int).ravel()
    s = np.asarray(scores, dtype=float).ravel()
    if y.shape != s.shape:
        raise ConfigError(f"worst_errors: got {y.size} labels and {s.size} scores; pass one score per label.")
    if threshold is None or not math.isfinite(float(threshold)):
        raise ConfigError(f"worst_errors: threshold={threshold!r}; errors need a finite threshold value.")
    t = float(threshold)
    finite = np.isfinite(s)
    fp = np.flatnonzero((y == 0) & finite & (s >= t))
    fn = np.flatnonzero((y == 1) & finite & (s < t))
    # stable sorts: equal scores keep the data set's order, so reports repeat
    fp = fp[np.argsort(-s[fp], kind="stable")][:n]
    fn = fn[np.argsort(s[fn], kind="stable")][:n]
    return fp, fn


def mask_outline(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = MASK_COLOR) -> np.ndarray:
    """A copy of a ``uint8`` RGB image with the boundary of a bool mask drawn over it in `color`.

    The mask is resized (nearest) to the image when the sizes differ. The boundary is the mask's
    pixels that touch a pixel outside it (4-neighbourhood, the image edge counting as outside).
    """
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[-1] != 3:
        raise ConfigError(f"mask_outline: image must be uint8 (H, W, 3), got {img.dtype} {img.shape}.")
    m = np.asarray(mask).astype(bool)
    if m.ndim != 2:
        raise ConfigError(f"mask_outline: mask must be 2-D (H, W), got shape {m.shape}.")
    if m.shape != img.shape[:2]:
        m = cv2.resize(m.astype(np.uint8), (img.shape[1], img.shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    inner = np.pad(m, 1, constant_values=False)
    interior = inner[:-2, 1:-1] & inner[2:, 1:-1] & inner[1:-1, :-2] & inner[1:-1, 2:]
    out = img.copy()
    out[m & ~interior] = color
    return out


def side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 2) -> np.ndarray:
    """Two ``uint8`` RGB images of the same height next to each other, a white `gap` between them."""
    if left.shape[0] != right.shape[0]:
        raise ConfigError(f"side_by_side: heights differ ({left.shape[0]} and {right.shape[0]}).")
    spacer = np.full((left.shape[0], gap, 3), 255, np.uint8)
    return np.concatenate([left, spacer, right], axis=1)


def tile_image(im: ReportImage) -> np.ndarray:
    """The picture of one tile: the overlay, and the ground-truth outline panel beside it when the
    tile has a mask (drawn on the plain image, or on the overlay when there is none)."""
    overlay = np.asarray(im.overlay)
    if im.mask is None:
        return overlay
    base = np.asarray(im.image) if im.image is not None else overlay
    if base.shape != overlay.shape:
        base = cv2.resize(base, (overlay.shape[1], overlay.shape[0]), interpolation=cv2.INTER_AREA)
    return side_by_side(overlay, mask_outline(base, im.mask))


def gallery_html(images: Sequence[ReportImage], empty: str = "No images selected for the gallery.") -> str:
    """The tiles as an HTML grid, in the order given; `empty` (escaped) when there are none."""
    if not images:
        return f'<p class="note">{_esc(empty)}</p>'
    tiles = []
    for im in images:
        if not isinstance(im, ReportImage):
            raise ConfigError(f"gallery images must be ReportImage objects, got {type(im).__name__}.")
        label = str(im.label)
        group = f" · {_esc(im.group)}" if str(im.group) not in ("", label) else ""
        classes = ["anomalous" if label == "anomalous" else "normal"] + (["pair"] if im.mask is not None else [])
        panels = "<br><span class='panels'>heatmap | ground truth</span>" if im.mask is not None else ""
        tiles.append(
            f'<figure class="{" ".join(classes)}">'
            f"{img_tag(encode_png(tile_image(im)), alt=im.name, cls='tile')}"
            f"<figcaption>{_esc(im.name)}<br><span class='score'>{_esc(format_value(im.score))}</span>"
            f" · {_esc(label)}{group}{panels}</figcaption></figure>"
        )
    return '<div class="gallery">' + "".join(tiles) + "</div>"


def error_sections(false_positives: Sequence[ReportImage] | None, false_negatives: Sequence[ReportImage] | None,
                   threshold: float | None, counts: tuple[int, int]) -> list[str]:
    """HTML of the two error galleries: headings, what they hold, the tiles or "none".

    `counts` are the numbers of false positives and false negatives in the whole set (the galleries
    may show fewer). A gallery given as None is left out.
    """
    t = format_value(threshold)
    sections = []
    for kind, images, total, what in (
        ("false positives", false_positives, counts[0],
         f"normal images scoring at or above the threshold {t}, highest score first"),
        ("false negatives", false_negatives, counts[1],
         f"anomalous images scoring below the threshold {t}, lowest score first"),
    ):
        if images is None:
            continue
        shown = f"{len(images)} of {total}" if total > len(images) else str(total)
        heading = f"Worst {kind} ({shown})" if total else f"Worst {kind}: none"
        sections += [f"<h2>{_esc(heading)}</h2>", f'<p class="sub">{_esc(what[0].upper() + what[1:])}.</p>']
        sections.append(gallery_html(images, empty=f"None: no {what.split(',')[0]}."))
    return sections


def skipped_files_html(skipped: Sequence[Mapping]) -> str:
    """The files skipped while decoding (``{"path", "reason"}`` each) as a table."""
    rows = [{"path": str(s.get("path", "")), "reason": str(s.get("reason", ""))} for s in skipped]
    return table_html(rows, columns=["path", "reason"])
