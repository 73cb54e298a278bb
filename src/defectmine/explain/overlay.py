"""Pure drawing functions: heatmap colouring, overlays and image grids.

Everything here takes arrays and returns ``uint8`` RGB arrays; writing files is ``report``'s job.
"""

from __future__ import annotations

import cv2
import matplotlib
import numpy as np

from defectmine.errors import ConfigError
from defectmine.explain.display import as_numpy, to_unit


def as_rgb_uint8(image) -> np.ndarray:
    """An image as ``uint8`` ``(H, W, 3)`` RGB.

    Accepts ``(H, W)``, ``(H, W, 1|3)`` or channel-first ``(1|3, H, W)`` arrays or tensors. A
    3-D array whose last axis is 1 or 3 is read as channel-last. Integer images must already be
    in 0..255; float images are taken to be in ``[0, 1]`` and clipped there.
    """
    a = as_numpy(image)
    if a.ndim == 3 and a.shape[-1] not in (1, 3) and a.shape[0] in (1, 3):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3):
        raise ConfigError(
            f"expected an image of shape (H, W), (H, W, 3) or (C, H, W) with C in {{1, 3}}, "
            f"got {a.shape}; convert RGBA or multi-channel images to RGB first."
        )
    if a.dtype == np.uint8:
        pass
    elif np.issubdtype(a.dtype, np.floating):
        a = np.rint(np.clip(np.nan_to_num(a), 0.0, 1.0) * 255.0).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_:
        a = np.clip(a, 0, 255).astype(np.uint8)
    else:
        raise ConfigError(f"unsupported image dtype {a.dtype}; pass uint8 or float in [0, 1].")
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return np.ascontiguousarray(a)


def _colormap(cmap: str):
    try:
        return matplotlib.colormaps[cmap]
    except KeyError:
        raise ConfigError(
            f"unknown colormap {cmap!r}; use a matplotlib colormap name such as 'jet', 'turbo', "
            "'inferno' or 'viridis'."
        ) from None


def colorize(heatmap, lo: float, hi: float, cmap: str = "jet") -> np.ndarray:
    """Colour a 2-D heatmap on the display range ``[lo, hi]``; returns ``uint8`` ``(H, W, 3)``.

    Values outside the range are clipped to its ends; NaN gets the colour of ``lo``.
    """
    h = as_numpy(heatmap)
    if h.ndim != 2:
        raise ConfigError(f"colorize: heatmap must be 2-D (H, W), got shape {h.shape}.")
    rgba = _colormap(cmap)(to_unit(h, lo, hi), bytes=True)
    return np.ascontiguousarray(rgba[..., :3])


def overlay(
    image,
    heatmap,
    lo: float,
    hi: float,
    *,
    alpha: float = 0.5,
    cmap: str = "jet",
    content: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """Blend a coloured heatmap over an image; returns ``uint8`` ``(H, W, 3)`` RGB.

    Args:
        image: ``uint8`` ``(H, W)``, ``(H, W, 3)`` or ``(C, H, W)`` with ``C`` in {1, 3}
            (see ``as_rgb_uint8`` for other dtypes).
        heatmap: 2-D float map; resized (bilinear) to the image size when it differs.
        lo, hi: display range, usually ``display_range`` over the whole set being shown.
        alpha: heatmap weight in ``[0, 1]``; 0 returns the image, 1 the coloured heatmap.
        cmap: matplotlib colormap name.
        content: ``(top, left, height, width)`` of the part of ``heatmap`` that shows ``image``;
            only that part is resized onto the image. A model input letterboxed with
            ``resize="pad"`` holds bars that are not in the image, and stretching them onto it
            would shift and squash every hot spot. None: the whole map.
    """
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"overlay: alpha must be in [0, 1], got {alpha}.")
    img = as_rgb_uint8(image)
    h = as_numpy(heatmap)
    if h.ndim == 3 and h.shape[0] == 1:
        h = h[0]
    if h.ndim != 2:
        raise ConfigError(f"overlay: heatmap must be 2-D (H, W), got shape {h.shape}.")
    if content is not None:
        top, left, box_h, box_w = (int(v) for v in content)
        if top < 0 or left < 0 or box_h < 1 or box_w < 1 or top + box_h > h.shape[0] or left + box_w > h.shape[1]:
            raise ConfigError(f"overlay: content box {content} (top, left, height, width) does not lie inside "
                              f"the {h.shape} heatmap.")
        h = h[top:top + box_h, left:left + box_w]
    height, width = img.shape[:2]
    if h.shape != (height, width):
        h = cv2.resize(h.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    color = colorize(h, lo, hi, cmap)
    out = (1.0 - alpha) * img.astype(np.float32) + alpha * color.astype(np.float32)
    return np.rint(out).clip(0, 255).astype(np.uint8)


def display_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """``(height, width)`` scaled down so that the longest side is at most ``max_side`` pixels,
    aspect ratio kept (each side at least 1); sizes already within the bound are returned as they are.

    Overlays of very large images are drawn at this size: a 12000 x 12000 image at full resolution
    would need gigabytes of float and colour arrays for a picture no screen shows whole.
    """
    max_side = int(max_side)
    if max_side < 1:
        raise ConfigError(f"display_size: max_side must be >= 1 pixel, got {max_side}; e.g. 2048.")
    height, width = int(height), int(width)
    longest = max(height, width)
    if longest <= max_side:
        return height, width
    scale = max_side / longest
    return max(1, min(max_side, round(height * scale))), max(1, min(max_side, round(width * scale)))


_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _font_scale(tile_width: int) -> float:
    # Hershey glyphs at scale 1 are ~20 px wide; keep roughly 20-40 characters per tile.
    return float(np.clip(tile_width / 500.0, 0.3, 0.6))


def _fit_text(text: str, width: int, scale: float) -> str:
    # cv2 draws ASCII only; anything else would come out as '?' anyway, so say so explicitly.
    text = "".join(c if 32 <= ord(c) < 127 else "?" for c in text)
    if cv2.getTextSize(text, _FONT, scale, 1)[0][0] <= width:
        return text
    while text and cv2.getTextSize(text + "..", _FONT, scale, 1)[0][0] > width:
        text = text[:-1]
    return text + ".." if text else ""


def grid(
    images: list,
    ncols: int = 4,
    pad: int = 2,
    captions: list[str] | None = None,
) -> np.ndarray:
    """Tile images into one ``uint8`` RGB image, with an optional caption strip under each tile.

    Every image is converted with ``as_rgb_uint8`` and resized to the first image's size. Tiles
    are separated (and framed) by ``pad`` white pixels; the last row is filled with white. Captions
    are drawn with ``cv2.putText`` in a small font, cut with ".." when wider than a tile; non-ASCII
    characters show as "?".

    Output shape: ``(rows * (H + c) + (rows + 1) * pad, cols * W + (cols + 1) * pad, 3)`` with
    ``cols = min(ncols, len(images))``, ``rows = ceil(len(images) / cols)`` and ``c`` the caption
    strip height (0 without captions).
    """
    if len(images) == 0:
        raise ConfigError("grid: got no images; pass at least one.")
    if int(ncols) < 1:
        raise ConfigError(f"grid: ncols must be >= 1, got {ncols}.")
    if int(pad) < 0:
        raise ConfigError(f"grid: pad must be >= 0, got {pad}.")
    if captions is not None and len(captions) != len(images):
        raise ConfigError(
            f"grid: got {len(captions)} captions for {len(images)} images; pass one caption per "
            "image or None."
        )
    ncols, pad = int(ncols), int(pad)
    tiles = [as_rgb_uint8(im) for im in images]
    th, tw = tiles[0].shape[:2]
    tiles = [
        t if t.shape[:2] == (th, tw) else cv2.resize(t, (tw, th), interpolation=cv2.INTER_AREA)
        for t in tiles
    ]
    cols = min(ncols, len(tiles))
    rows = -(-len(tiles) // cols)

    scale = _font_scale(tw)
    if captions is not None:
        (_, text_h), baseline = cv2.getTextSize("Ag", _FONT, scale, 1)
        cap_h = text_h + baseline + 4
    else:
        cap_h = 0
    cell_h = th + cap_h
    out = np.full((rows * cell_h + (rows + 1) * pad, cols * tw + (cols + 1) * pad, 3), 255, np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, cols)
        y0 = pad + r * (cell_h + pad)
        x0 = pad + c * (tw + pad)
        out[y0 : y0 + th, x0 : x0 + tw] = tile
        if captions is not None:
            text = _fit_text(str(captions[k]), tw - 2, scale)
            cv2.putText(
                out, text, (x0 + 1, y0 + th + 2 + text_h), _FONT, scale, (0, 0, 0), 1, cv2.LINE_AA
            )
    return out
