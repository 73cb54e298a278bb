"""Synthetic defects from the training images themselves, for training a detector without labels
(DRAEM, Zavrtanik et al., ICCV 2021, without its external texture set):

    images, masks = synthetic_defects(batch_uint8, rng)      # numpy (B, C, H, W) uint8 -> new arrays

Each image becomes, with probability 1 - clean_share, a defective image of one kind drawn from `kinds`:

- "perlin": a thresholded Perlin-noise mask filled with another image of the batch (flipped and, with
  `source_turns` on, turned by quarter turns, so a foreign texture), blended with opacity 1 - beta,
  beta in [0, 0.8) (DRAEM eq. 1);
  with `source_ops` n > 0 that texture first goes through n photometric changes drawn from
  `SOURCE_OPS` (DRAEM augments its anomaly source with 3 such; on a uniform surface the other images
  are the same texture, and only these make the filled region differ);
- "cutpaste" / "poisson": a region of another image of the batch (a Perlin blob or a thin scar) cut
  out and pasted by `defectmine.data.blending.paste` (the segmentation issue's transform, placement,
  hard paste and Poisson seamless cloning: nothing is written twice);
- "band" (not in the default `DEFAULT_DEFECTS`): the part of the image beyond a wavy line across it,
  from one edge to 15-50 % of the way, filled with another image's texture at another brightness: a
  large region of different finish, like Magnetic Tile's "uneven" class, which small blobs do not imitate.

Pure functions: new arrays out, randomness from the `numpy.random.Generator` passed in.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from defectmine.data.blending import CropTransform, paste
from defectmine.errors import ConfigError, DataError

DEFECT_KINDS = ("perlin", "cutpaste", "poisson", "band")
DEFAULT_DEFECTS = ("perlin", "cutpaste", "poisson")  # what draem draws unless told (as benchmarked)
_BLEND = {"cutpaste": "cutpaste", "poisson": "poisson"}


def _per_channel(image: np.ndarray, change) -> np.ndarray:
    return np.stack([change(np.ascontiguousarray(image[..., c])) for c in range(image.shape[-1])], axis=-1)


def _gamma(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return 255.0 * (image / 255.0) ** rng.uniform(0.5, 2.0)


def _brightness(image: np.ndarray, rng: np.random.Generator, gain: tuple[float, float] = (0.8, 1.2),
                offset: tuple[float, float] = (-30, 30)) -> np.ndarray:
    return image * rng.uniform(*gain) + rng.uniform(*offset)


def _sharpness(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    blurred = _per_channel(image, lambda ch: cv2.GaussianBlur(ch, (3, 3), 0))  # factor 0: blurred, 1: unchanged, 2: sharpened
    return blurred + rng.uniform(0.0, 2.0) * (image - blurred)


def _solarize(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.where(image >= rng.uniform(32, 128), 255.0 - image, image)


def _posterize(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    drop = 8 - int(rng.integers(2, 8))  # keep 2-7 bits
    return np.floor(image / 2**drop) * 2**drop


def _invert(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return 255.0 - image


def _autocontrast(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    low, high = image.min(axis=(0, 1)), image.max(axis=(0, 1))
    return (image - low) * (255.0 / np.maximum(high - low, 1.0))


def _equalize(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _per_channel(np.clip(image, 0, 255).astype(np.uint8), cv2.equalizeHist).astype(np.float32)


def _rotate(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape[:2]
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-45, 45), 1.0)
    return _per_channel(image, lambda ch: cv2.warpAffine(ch, turn, (w, h), borderMode=cv2.BORDER_REFLECT))


# DRAEM's anomaly-source changes that need no colour (hue and saturation would not apply to grayscale)
SOURCE_OPS = {"gamma": _gamma, "brightness": _brightness, "sharpness": _sharpness, "solarize": _solarize,
              "posterize": _posterize, "invert": _invert, "autocontrast": _autocontrast, "equalize": _equalize,
              "rotate": _rotate}


def check_source_ops(n_ops) -> int:
    """`n_ops` if it is a count of `SOURCE_OPS` changes (0 to all of them), else a ConfigError."""
    if isinstance(n_ops, bool) or not isinstance(n_ops, (int, np.integer)) or not 0 <= n_ops <= len(SOURCE_OPS):
        raise ConfigError(f"source_ops={n_ops!r}: use a whole number in [0, {len(SOURCE_OPS)}] "
                          f"(changes drawn from {', '.join(SOURCE_OPS)}).")
    return int(n_ops)


def augment_source(image_hwc: np.ndarray, rng: np.random.Generator, n_ops: int, turns: bool = True) -> np.ndarray:
    """`image_hwc` (uint8, H x W x C) after `n_ops` distinct changes drawn from `SOURCE_OPS`, in a random
    order: a texture source unlike the surface it is pasted into. `n_ops` 0 returns it unchanged and
    draws nothing from `rng`. Without `turns` the rotation is not among the changes (at most the others)."""
    if check_source_ops(n_ops) == 0:
        return image_hwc
    names = [name for name in SOURCE_OPS if turns or name != "rotate"]
    out = image_hwc.astype(np.float32)
    for name in rng.choice(names, size=min(int(n_ops), len(names)), replace=False):
        out = np.clip(SOURCE_OPS[name](out, rng), 0, 255).astype(np.float32)
    return out.round().astype(np.uint8)


def perlin_noise(shape: tuple[int, int], resolution: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """2D Perlin noise (float32, about [-0.7, 0.7]) of `shape` with `resolution` gradient cells per axis:
    random unit gradients on a lattice, dot products with the offsets, blended by the quintic fade."""
    ry, rx = (max(1, int(r)) for r in resolution)
    angles = rng.uniform(0, 2 * np.pi, (ry + 1, rx + 1))
    gradients = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    ys = np.linspace(0, ry, shape[0], endpoint=False)
    xs = np.linspace(0, rx, shape[1], endpoint=False)
    y, x = np.meshgrid(ys, xs, indexing="ij")
    y0, x0 = y.astype(int), x.astype(int)
    fy, fx = y - y0, x - x0

    def corner(dy: int, dx: int) -> np.ndarray:
        g = gradients[y0 + dy, x0 + dx]
        return g[..., 0] * (fy - dy) + g[..., 1] * (fx - dx)

    def fade(t: np.ndarray) -> np.ndarray:
        return 6 * t**5 - 15 * t**4 + 10 * t**3

    uy, ux = fade(fy), fade(fx)
    top = corner(0, 0) * (1 - ux) + corner(0, 1) * ux
    bottom = corner(1, 0) * (1 - ux) + corner(1, 1) * ux
    return (top * (1 - uy) + bottom * uy).astype(np.float32)


def perlin_mask(shape: tuple[int, int], rng: np.random.Generator, *, threshold: float = 0.3,
                max_scale: int = 6) -> np.ndarray:
    """A bool mask: Perlin noise of 2**a x 2**b cells (a, b drawn in [0, max_scale)) above `threshold`,
    DRAEM's anomaly shapes. Never empty: the threshold is lowered until some pixels pass."""
    a, b = (int(rng.integers(0, max_scale)) for _ in range(2))
    noise = perlin_noise(shape, (min(2**a, shape[0] // 2 or 1), min(2**b, shape[1] // 2 or 1)), rng)
    mask = noise > threshold
    if not mask.any():  # a flat draw: take the top 2 % of its pixels instead
        mask = noise >= np.quantile(noise, 0.98)
    return mask


def _scar(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A thin line (1-3 px) across a window: crack- and fray-like defects, which blobs do not imitate."""
    mask = np.zeros(shape, np.uint8)
    h, w = shape
    p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
    p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
    cv2.line(mask, p0, p1, 1, int(rng.integers(1, 4)))
    return mask.astype(bool)


def band_mask(shape: tuple[int, int], rng: np.random.Generator, *,
              reach: tuple[float, float] = (0.15, 0.5)) -> np.ndarray:
    """A bool mask of the part of the image beyond a wavy line that runs across it (horizontally or
    vertically), measured from one edge: its mean depth a share of the side drawn in `reach`, its
    waviness 1D Perlin noise. Never empty: every column (or row) keeps at least one pixel."""
    h, w = shape
    across_width = rng.random() < 0.5
    extent, length = (h, w) if across_width else (w, h)
    wave = perlin_noise((1, length), (1, int(rng.integers(1, 5))), rng)[0]
    depth = rng.uniform(*reach) * extent + wave * rng.uniform(0.05, 0.2) * extent
    mask = np.arange(extent)[:, None] < np.clip(np.round(depth), 1, extent)[None, :]
    if rng.random() < 0.5:  # from the far edge instead
        mask = mask[::-1]
    return np.ascontiguousarray(mask if across_width else mask.T)


def _foreign_texture(image_hwc: np.ndarray, rng: np.random.Generator, turns: bool = True) -> np.ndarray:
    """Another image made unlike its neighbours: a random flip and, with `turns`, a quarter turn (square
    images only, whose shape stays). Without turns an oriented texture (grinding marks) keeps its
    direction, so the filled region differs in finish rather than in orientation."""
    out = image_hwc[::-1] if rng.random() < 0.5 else image_hwc
    out = out[:, ::-1] if rng.random() < 0.5 else out
    if turns and out.shape[0] == out.shape[1]:
        out = np.rot90(out, int(rng.integers(0, 4)))
    return np.ascontiguousarray(out)


def _fill(target: np.ndarray, texture: np.ndarray, mask: np.ndarray, beta: float) -> np.ndarray:
    """`target` with its `mask` pixels replaced by `texture` blended at opacity 1 - beta (DRAEM eq. 1)."""
    blended = (1 - beta) * texture + beta * target.astype(np.float32)
    out = target.copy()
    out[mask] = np.clip(blended[mask], 0, 255).astype(np.uint8)
    return out


def _perlin_defect(target: np.ndarray, source: np.ndarray, rng: np.random.Generator,
                   source_ops: int = 0, turns: bool = True) -> tuple[np.ndarray, np.ndarray]:
    mask = perlin_mask(target.shape[:2], rng)
    beta = rng.uniform(0.0, 0.8)
    texture = augment_source(_foreign_texture(source, rng, turns), rng, source_ops, turns).astype(np.float32)
    return _fill(target, texture, mask, beta), mask


def _band_defect(target: np.ndarray, source: np.ndarray, rng: np.random.Generator,
                 turns: bool = True) -> tuple[np.ndarray, np.ndarray]:
    mask = band_mask(target.shape[:2], rng)
    # the same surface in another finish: another image's texture, shifted in brightness, partly blended
    texture = _brightness(_foreign_texture(source, rng, turns).astype(np.float32), rng, (0.7, 1.3), (-25, 25))
    return _fill(target, texture, mask, rng.uniform(0.0, 0.5)), mask


def _pasted_defect(target: np.ndarray, source: np.ndarray, method: str, rng: np.random.Generator,
                   turns: bool = True) -> tuple[np.ndarray, np.ndarray]:
    h, w = target.shape[:2]
    wh, ww = (max(4, int(s * rng.uniform(0.15, 0.4))) for s in (h, w))
    top, left = int(rng.integers(0, h - wh + 1)), int(rng.integers(0, w - ww + 1))
    pixels = _foreign_texture(source[top:top + wh, left:left + ww], rng, turns)
    mask = _scar(pixels.shape[:2], rng) if rng.random() < 0.5 else perlin_mask(pixels.shape[:2], rng, max_scale=3)
    # brightness jitter: a patch of the same surface would otherwise often be invisible
    pixels = np.clip(_brightness(pixels.astype(np.float32), rng, (0.6, 1.4), (-40, 40)), 0, 255).astype(np.uint8)
    transform = CropTransform() if turns else CropTransform(rotate=0.0)
    new, label, _ = paste(target, pixels, mask, _BLEND[method], transform, rng)
    return new, label


def synthetic_defects(images: np.ndarray, rng: np.random.Generator, *, kinds: Sequence[str] = DEFAULT_DEFECTS,
                      clean_share: float = 0.5, source_ops: int = 0,
                      source_turns: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic defects in a batch of normal images (module docstring).

    images: uint8 (B, C, H, W), C = 1 or 3, B >= 1 (the textures come from the other images of the
    batch; a batch of one uses its own image). Returns new images (B, C, H, W) uint8 and masks
    (B, H, W) bool, all False for the images left clean (a share `clean_share`, drawn per image).
    source_ops: photometric changes applied to each "perlin" texture source (`augment_source`).
    source_turns: whether texture sources of every kind may also be turned (quarter turns of square
        sources, the "rotate" change among `source_ops`, the pasted crops' rotation); flips are always drawn.
    """
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    if not kinds or any(k not in DEFECT_KINDS for k in kinds):
        raise ConfigError(f"synthetic defect kinds {kinds!r}: use one or more of {', '.join(DEFECT_KINDS)}.")
    if isinstance(clean_share, bool) or not isinstance(clean_share, (int, float)) or not 0 <= clean_share < 1:
        raise ConfigError(f"clean_share={clean_share!r}: use a share in [0, 1).")
    check_source_ops(source_ops)
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        shape = getattr(images, "shape", None)
        raise DataError(f"synthetic_defects takes uint8 numpy images (B, C, H, W), C = 1 or 3; got {shape}. "
                        "Fix: pass raw pixels (ImageDataset.raw_images().numpy()), before normalising.")
    hwc = images.transpose(0, 2, 3, 1)
    out, masks = hwc.copy(), np.zeros((len(images), *images.shape[2:]), bool)
    for i in range(len(images)):
        if rng.random() < clean_share:
            continue
        source = hwc[(i + 1 + int(rng.integers(0, max(1, len(images) - 1)))) % len(images)]
        kind = kinds[int(rng.integers(len(kinds)))]
        if kind == "perlin":
            out[i], masks[i] = _perlin_defect(hwc[i], source, rng, source_ops, source_turns)
        elif kind == "band":
            out[i], masks[i] = _band_defect(hwc[i], source, rng, source_turns)
        else:
            out[i], masks[i] = _pasted_defect(hwc[i], source, kind, rng, source_turns)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2)), masks
