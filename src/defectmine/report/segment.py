"""Drawing for segmenters: palette class-mask PNGs, class overlays and the segment run report.

Pure drawing: the functions take class-index maps (0 = background) and return pixels, PNG bytes or
HTML; the pipeline decides what to draw and where to write it.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from defectmine.errors import ConfigError
from defectmine.explain.overlay import as_rgb_uint8
from defectmine.report.gallery import ReportImage, gallery_html, side_by_side
from defectmine.report.markup import _esc, format_value, page_head, table_html

# Class 0 (background) black; then colours that stay apart on grey images, then a fixed-seed fill,
# so that a class keeps its colour in every mask, overlay and report of a run.
_FIRST_COLOURS = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (145, 30, 180),
                  (70, 240, 240), (245, 130, 48), (240, 50, 230), (210, 245, 60), (0, 128, 128)]
PALETTE = np.array(_FIRST_COLOURS + [tuple(int(v) for v in c) for c in
                   np.random.default_rng(0).integers(40, 256, (256 - len(_FIRST_COLOURS), 3))], dtype=np.uint8)
MAX_CLASSES = len(PALETTE)  # a palette PNG holds 256 colours: background and 255 defect classes


def _check_class_map(class_map: np.ndarray) -> np.ndarray:
    labels = np.asarray(class_map)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ConfigError(f"class maps must be integer (H, W) arrays of class indices, got {labels.dtype} {labels.shape}.")
    if labels.size and (labels.min() < 0 or labels.max() >= MAX_CLASSES):
        raise ConfigError(f"class indices must lie in 0..{MAX_CLASSES - 1} to fit a palette PNG; "
                          f"got {labels.min()}..{labels.max()}.")
    return labels


def palette_png(class_map: np.ndarray) -> bytes:
    """PNG bytes of an (H, W) class-index map as a palette image: each pixel's value is its class
    index (0 = background, black), and viewers show every class in its `PALETTE` colour."""
    labels = _check_class_map(class_map)
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette(PALETTE.reshape(-1).tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def save_palette_png(path: Path, class_map: np.ndarray) -> Path:
    """Write `palette_png(class_map)` to `path` (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(palette_png(class_map))
    return path


def class_overlay(image, class_map: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """uint8 (H, W, 3) RGB: `image` with every defect pixel blended with its class colour.

    image: any image `as_rgb_uint8` takes; class_map: (h, w) class indices, resized (nearest) to the
    image when the sizes differ. Background pixels are left as they are.
    """
    rgb = as_rgb_uint8(image)
    labels = _check_class_map(class_map)
    if labels.shape != rgb.shape[:2]:
        labels = cv2.resize(labels.astype(np.uint8), (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
    defect = labels > 0
    out = rgb.copy()
    blended = (1 - alpha) * rgb[defect].astype(np.float32) + alpha * PALETTE[labels[defect]].astype(np.float32)
    out[defect] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out


def class_areas(class_map: np.ndarray, classes: Sequence[str]) -> dict:
    """Pixels and percentage of the map per defect class: {name: (pixels, percent)}."""
    labels = _check_class_map(class_map)
    counts = np.bincount(labels.reshape(-1), minlength=len(classes))
    total = max(labels.size, 1)
    return {name: (int(counts[i]), 100.0 * counts[i] / total) for i, name in enumerate(classes) if i > 0}


def legend_html(classes: Sequence[str]) -> str:
    """Colour swatches of the defect classes (index: name)."""
    items = []
    for i, name in enumerate(classes):
        if i == 0:
            continue
        r, g, b = (int(v) for v in PALETTE[i])
        items.append(f'<span style="display:inline-block;width:1em;height:1em;background:rgb({r},{g},{b});'
                     f'vertical-align:middle"></span> {i}: {_esc(name)}')
    return "<p>" + " &nbsp; ".join(items) + "</p>"


def _upscaled(image: np.ndarray, side: int = 128) -> np.ndarray:
    """Tiny images enlarged (nearest) so that report tiles show their pixels."""
    height, width = image.shape[:2]
    factor = max(1, side // max(height, width))
    return image if factor == 1 else cv2.resize(image, (width * factor, height * factor),
                                                interpolation=cv2.INTER_NEAREST)


def segment_tiles(dataset, predicted: np.ndarray, scores: np.ndarray, n_images: int) -> list[ReportImage]:
    """Gallery tiles "ground truth | prediction" of the `n_images` most defect-like images (highest
    image score first) of `dataset` (records, raw_images(), class_masks(), mask_available)."""
    order = np.argsort(-np.asarray(scores), kind="stable")[:n_images]
    raw, truth, known = dataset.raw_images(), dataset.class_masks(), dataset.mask_available
    tiles = []
    for i in order.tolist():
        record = dataset.records[i]
        image = raw[i].numpy()
        truth_panel = class_overlay(image, truth[i]) if known[i] else as_rgb_uint8(image)
        panels = side_by_side(_upscaled(truth_panel), _upscaled(class_overlay(image, predicted[i])))
        tiles.append(ReportImage(name=Path(record.path).name, overlay=panels, score=float(scores[i]),
                                 label=record.label, group=record.defect_class or record.label))
    return tiles


def render_segment_report(*, title: str, document: Mapping, metrics: Mapping, classes: Sequence[str],
                          tiles: Sequence[ReportImage]) -> str:
    """The self-contained HTML report of a segment run: image metrics, per-class IoU / Dice, pooled
    IoU, the settings, and a gallery of ground truth | prediction."""
    segmentation = metrics.get("segmentation", {})
    parts = [page_head(title)]
    threshold = metrics.get("threshold", {})
    parts.append(f'<p class="sub">pixel threshold {_esc(format_value(metrics.get("pixel_threshold")))} '
                 f'(chosen on val) · image threshold {_esc(format_value(threshold.get("value")))} '
                 f'({_esc(threshold.get("rule", ""))} on val)</p>')
    rows = [{"set": part, **{k: (metrics.get(part) or {}).get(k) for k in ("auroc", "f1", "precision", "recall")}}
            for part in ("val", "test") if metrics.get(part)]
    parts += ["<h2>Any defect predicted (image level)</h2>", table_html(rows)]
    for part in ("test", "val"):
        values = segmentation.get(part)
        if not values:
            continue
        per_class = [{"class": name, **v} for name, v in values["per_class"].items()]
        pooled = [{k: values[k] for k in ("mean_iou", "mean_dice", "pooled_iou", "defective_pooled_iou", "images")}]
        parts += [f"<h2>Segmentation on {part}</h2>", table_html(per_class), table_html(pooled)]
        left_out = segmentation.get(f"{part}_without_mask", 0)
        if left_out:
            parts.append(f'<p class="note">{left_out} anomalous image(s) without a mask left out of these metrics.</p>')
    parts += ["<h2>Images: ground truth | prediction</h2>", legend_html(classes), gallery_html(list(tiles))]
    settings = [{"setting": k, "value": v} for k, v in (document.get("run") or {}).items()]
    parts += ["<h2>Settings</h2>", table_html(settings), "</body></html>"]
    return "\n".join(parts)


def write_segment_report(path: Path, **kwargs) -> Path:
    """Write `render_segment_report(**kwargs)` to `path`; returns the path."""
    path = Path(path)
    path.write_text(render_segment_report(**kwargs), encoding="utf-8")
    return path
