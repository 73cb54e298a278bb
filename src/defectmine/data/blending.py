"""Pasting one defect crop into one image: the crop's random transform, its placement, and the two
blends of Dynamic Label Injection (Caruso et al. 2024, sec. 3.2): Poisson seamless cloning
(OpenCV `seamlessClone`, eq. 2-4) and cut-paste.

Images here are numpy HxWxC uint8 (C = 1 or 3, OpenCV's layout); masks are bool HxW. Every function
is pure: it returns new arrays and takes its randomness from an explicit `numpy.random.Generator`.
`defectmine.data.injection` builds the batch-level method (eq. 5) on top of these.

Poisson blending, as OpenCV implements it, works inside the bounding box of a region Omega: the box's
outer row and column keep the target's pixels (the Dirichlet boundary, eq. 3), the source's gradients
guide only where Omega eroded by 3 pixels lies (OpenCV erodes the mask internally), and the target's
gradients guide the rest of the box. Omega is therefore the defect grown by `_GROW` pixels, so that
the whole defect receives the source's gradients, and the label of a Poisson paste is the defect
pixels inside that eroded region: the pixels that were actually pasted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from defectmine.errors import ConfigError

# Method name -> OpenCV clone flag (None: hard paste). "poisson" is the paper's mixed-gradient variant
# (their code blends with mix_gradients=True): at every pixel the stronger of the crop's and the
# target's gradients guides, so target texture shows through faint defects.
BLENDS = {"poisson": cv2.MIXED_CLONE, "poisson_normal": cv2.NORMAL_CLONE, "cutpaste": None}
METHODS = tuple(BLENDS)


def check_methods(methods, option: str = "methods") -> tuple[str, ...]:
    """The paste methods as a tuple (one name or several); ConfigError naming `option` when the list is
    empty or holds an unknown name."""
    methods = (methods,) if isinstance(methods, str) else tuple(methods)
    unknown = [m for m in methods if m not in BLENDS]
    if not methods or unknown:
        problem = f"unknown {', '.join(map(str, unknown))}" if unknown else "empty"
        raise ConfigError(f"{option} {','.join(map(str, methods))}: {problem}. "
                          f"Fix: one or more of {', '.join(METHODS)}, e.g. poisson,cutpaste.")
    return methods

_KERNEL = np.ones((3, 3), np.uint8)
_ERODE = 3  # OpenCV's seamlessClone erodes its mask 3 times with a 3x3 kernel
_GROW = _ERODE + 1  # Omega = defect dilated by this much: the eroded Omega still holds the defect
_CONTEXT = _GROW + 1  # crop pixels kept around the defect after the transform (Omega + its ring)
POISSON_INSET = _ERODE + 1  # defect kept this far from the image border when there is room


@dataclass(frozen=True)
class CropTransform:
    """The random joint transform of a crop and its mask before pasting (paper sec. 3.2 step c, 4.1:
    flip, scale, rotation; the shift is the placement).

    flip: flip horizontally and vertically, each with probability 1/2.
    rotate: angle drawn uniformly in [-rotate, rotate] degrees (0: no rotation; 180: any angle).
    scale: zoom factor drawn uniformly in [low, high]. A defect larger than the target image is
        scaled down further until it fits.
    """

    flip: bool = True
    rotate: float = 180.0
    scale: tuple[float, float] = (0.75, 1.25)

    def __post_init__(self) -> None:
        if not isinstance(self.flip, bool):
            raise ConfigError(f"CropTransform(flip={self.flip!r}): use True or False.")
        if not isinstance(self.rotate, (int, float)) or not 0 <= self.rotate <= 180:
            raise ConfigError(f"CropTransform(rotate={self.rotate!r}): use a number of degrees in [0, 180].")
        scale = tuple(self.scale) if isinstance(self.scale, (tuple, list)) else ()
        numbers = len(scale) == 2 and all(isinstance(s, (int, float)) and 0 < s < math.inf for s in scale)
        if not numbers or scale[0] > scale[1]:
            raise ConfigError(f"CropTransform(scale={self.scale!r}): use (low, high) with 0 < low <= high.")
        object.__setattr__(self, "scale", (float(scale[0]), float(scale[1])))


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the True pixels (mask must have one)."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return int(rows[0]), int(cols[0]), int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def _warp(pixels: np.ndarray, mask: np.ndarray, angle: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate and scale about the centre onto a canvas that holds the whole result (nothing cut)."""
    if angle == 0 and scale == 1:
        return pixels, mask
    h, w = mask.shape
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, scale)
    corners = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [-0.5, h - 0.5], [w - 0.5, h - 0.5]])
    moved = corners @ m[:, :2].T + m[:, 2]
    low, high = moved.min(0), moved.max(0)
    m[:, 2] -= low + 0.5  # the canvas's first pixel centre sits half a pixel inside the corner
    size = (max(1, math.ceil(high[0] - low[0] - 1e-6)), max(1, math.ceil(high[1] - low[1] - 1e-6)))
    out = cv2.warpAffine(pixels, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    soft = cv2.warpAffine(mask.astype(np.float32), m, size, flags=cv2.INTER_LINEAR, borderValue=0.0)
    # The mask follows the pixels' interpolation: a pixel is defect when most of it came from the defect.
    new_mask = soft >= 0.5
    if not new_mask.any():  # a thin defect shrunk below half a pixel: keep its strongest trace
        new_mask = soft >= soft.max()
    return out.reshape(*out.shape[:2], pixels.shape[2]), new_mask


def transform_crop(
    pixels: np.ndarray, mask: np.ndarray, transform: CropTransform, rng: np.random.Generator, fit: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """A randomly flipped, rotated and scaled copy of a crop (HxWxC uint8) and its defect mask (HxW bool),
    with `_CONTEXT` pixels of context around the defect. The defect is scaled down further when it
    would not fit `fit` = (height, width)."""
    flips = rng.random(2) < 0.5
    if transform.flip and flips[0]:
        pixels, mask = pixels[:, ::-1], mask[:, ::-1]
    if transform.flip and flips[1]:
        pixels, mask = pixels[::-1], mask[::-1]
    pixels, mask = np.ascontiguousarray(pixels), np.ascontiguousarray(mask)
    angle = float(rng.uniform(-transform.rotate, transform.rotate))
    scale = float(rng.uniform(*transform.scale))
    for _ in range(4):  # shrink until the defect fits; interpolation may round a size up by a pixel
        out, out_mask = _warp(pixels, mask, angle, scale)
        _, _, dh, dw = _bbox(out_mask)
        if dh <= fit[0] and dw <= fit[1]:
            break
        scale *= 0.98 * min(fit[0] / dh, fit[1] / dw)
    # Poisson needs this context around the defect, also where the defect touched the crop's edge or
    # a strong zoom-out shrank the crop's margin: replicate the edge pixels where the crop ran out.
    pad = _CONTEXT
    out = cv2.copyMakeBorder(out, pad, pad, pad, pad, cv2.BORDER_REPLICATE).reshape(
        out.shape[0] + 2 * pad, out.shape[1] + 2 * pad, out.shape[2] if out.ndim == 3 else 1
    )
    out_mask = np.pad(out_mask, pad)
    top, left, dh, dw = _bbox(out_mask)
    window = slice(top - pad, top + dh + pad), slice(left - pad, left + dw + pad)
    return out[window], out_mask[window]


def place(mask: np.ndarray, image_size: tuple[int, int], rng: np.random.Generator, inset: int = 0) -> tuple[int, int]:
    """Random (top, left) of the crop in the image such that its defect lies inside the image, at least
    `inset` pixels from the border when there is room. The crop's context may hang outside; a defect
    larger than the image is centred (and clipped when pasted)."""
    top, left, dh, dw = _bbox(mask)
    corner = []
    for size, extent in zip(image_size, (dh, dw)):
        room = size - extent
        low, high = (inset, room - inset) if room >= 2 * inset else (0, room)
        corner.append(int(rng.integers(low, high + 1)) if room >= 0 else room // 2)
    return corner[0] - top, corner[1] - left


def _window(image_size: tuple[int, int], crop_size: tuple[int, int], top: int, left: int):
    """The image slice covered by the crop at (top, left), and the matching crop slice."""
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + crop_size[0], image_size[0]), min(left + crop_size[1], image_size[1])
    if y1 <= y0 or x1 <= x0:
        return None
    return (slice(y0, y1), slice(x0, x1)), (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))


def cut_paste(
    target: np.ndarray, pixels: np.ndarray, mask: np.ndarray, top: int, left: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Hard paste: the crop's defect pixels replace the target's. Returns (new image, label: bool HxW,
    the pasted pixels), or None when no defect pixel falls inside the image."""
    window = _window(target.shape[:2], mask.shape, top, left)
    if window is None or not mask[window[1]].any():
        return None
    inside, part = window
    out, label = target.copy(), np.zeros(target.shape[:2], bool)
    label[inside] = mask[part]
    out[label] = pixels[part][mask[part]]
    return out, label


def poisson_paste(
    target: np.ndarray, pixels: np.ndarray, mask: np.ndarray, top: int, left: int, flag: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Poisson seamless cloning (eq. 2-4) of the crop's defect into the target with OpenCV flag
    NORMAL_CLONE or MIXED_CLONE. Returns (new image, label: the defect pixels that received the crop's
    gradients), or None when the image is too small for a Poisson region there (the caller falls back
    to cut-paste). Only pixels inside the grown defect's bounding box change; nothing outside the image
    is ever addressed, because OpenCV works on the window of the image that the crop covers."""
    window = _window(target.shape[:2], mask.shape, top, left)
    if window is None:
        return None
    inside, part = window
    defect = mask[part]
    omega = cv2.dilate(defect.astype(np.uint8), _KERNEL, iterations=_GROW)
    # OpenCV clears the mask's outer ring itself; clearing it here keeps our bounding box equal to
    # OpenCV's, so that the centre below maps the window onto itself.
    omega[[0, -1], :] = 0
    omega[:, [0, -1]] = 0
    if not omega.any():
        return None
    x, y, w, h = cv2.boundingRect(omega)
    if w < 3 or h < 3:  # OpenCV's solver fails on boxes thinner than 3 pixels
        return None
    core = cv2.erode(omega, _KERNEL, iterations=_ERODE, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
    label_part = defect & core
    if not label_part.any():
        return None
    channels = target.shape[2]
    source = np.ascontiguousarray(pixels[part])
    background = np.ascontiguousarray(target[inside])
    if channels == 1:  # seamlessClone wants 3 channels; three equal planes solve to three equal planes
        source, background = np.repeat(source, 3, axis=2), np.repeat(background, 3, axis=2)
    # The centre of the box (integer halves, as OpenCV computes them) puts the box at (x, y) in the
    # window: every pixel stays where it is. seamlessClone writes into its mask argument: pass a copy.
    blended = cv2.seamlessClone(source, background, omega * 255, (x + w // 2, y + h // 2), flag)
    out, label = target.copy(), np.zeros(target.shape[:2], bool)
    out[inside] = blended[..., :channels]
    label[inside] = label_part
    return out, label


def paste(
    target: np.ndarray,
    pixels: np.ndarray,
    mask: np.ndarray,
    method: str,
    transform: CropTransform,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Transform a crop (HxWxC uint8, defect mask HxW bool), place it at random in `target` (HxWxC
    uint8) and blend it with `method` (a key of BLENDS).

    Returns (new image, label bool HxW, method used): "cutpaste" when a Poisson blend had no room
    (an image only a few pixels wide), so that the label always matches what was pasted.
    """
    flag = BLENDS[method]
    inset = POISSON_INSET if flag is not None else 0
    height, width = target.shape[:2]
    # A Poisson paste labels only the defect pixels at least `inset` from the border: scale the
    # defect to fit inside that frame when the image has one.
    fit = (height - 2 * inset, width - 2 * inset) if min(height, width) > 2 * inset + 2 else (height, width)
    pixels, mask = transform_crop(pixels, mask, transform, rng, fit)
    top, left = place(mask, target.shape[:2], rng, inset)
    if flag is not None:
        result = poisson_paste(target, pixels, mask, top, left, flag)
        if result is not None:
            return (*result, method)
    result = cut_paste(target, pixels, mask, top, left)
    if result is None:  # unreachable: place() keeps the defect inside the image
        raise AssertionError("the placed defect lies outside the image")
    return (*result, "cutpaste")
