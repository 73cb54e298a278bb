"""Reading images and masks from disk and bringing them to one size, channel count and value range.

Everything here is a pure function over numpy arrays (or torch tensors for `normalise`), so the same
geometry is applied to an image and its mask and can be tested on hand-made arrays.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from defectmine.errors import ConfigError, DataError
from defectmine.data.masks import read_class_mask, read_mask
from defectmine.data.pixels import UnreadableFileError, read_pixels

if TYPE_CHECKING:  # torch only for `normalise`: decoding and resizing (predict of an exported model) run without it
    import torch

__all__ = [
    "IMAGE_SUFFIXES",
    "RESIZE_POLICIES",
    "ImageSpec",
    "UnreadableFileError",
    "enlarges",
    "normalise",
    "prepare_image",
    "prepare_mask",
    "read_class_mask",
    "read_image",
    "read_mask",
    "to_gray",
]

RESIZE_POLICIES = ("stretch", "pad")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class ImageSpec:
    """What every image becomes before it reaches a model.

    size: (height, width) in pixels.
    channels: 1 (grayscale; RGB is converted by luminance) or 3 (grayscale is repeated).
    resize: "stretch" resizes to `size` without keeping the aspect ratio; "pad" keeps the aspect
        ratio and letterboxes with zeros (masks get the same geometry).
    mean, std: per-channel normalisation of values in [0, 1]; length 1 (shared by all channels)
        or `channels`.
    """

    size: tuple[int, int] = (224, 224)
    channels: int = 3
    resize: str = "stretch"
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.25,)

    def __post_init__(self) -> None:
        # JSON gives lists; keep the dataclass hashable and comparable by storing tuples.
        for name in ("size", "mean", "std"):
            value = getattr(self, name)
            if isinstance(value, (int, float)) and name != "size":
                value = (value,)
            try:
                object.__setattr__(self, name, tuple(value))
            except TypeError:
                raise ConfigError(
                    f"ImageSpec.{name}={value!r} is not a sequence. Fix: pass a tuple, e.g. "
                    f"{name}={ImageSpec.__dataclass_fields__[name].default!r}."
                ) from None
        size = self.size
        positive_ints = all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in size)
        if len(size) != 2 or not positive_ints:
            raise ConfigError(
                f"ImageSpec.size={size!r} is invalid. Fix: pass (height, width) as two positive integers, "
                "e.g. size=(224, 224)."
            )
        object.__setattr__(self, "size", (int(size[0]), int(size[1])))
        if self.channels not in (1, 3) or isinstance(self.channels, bool):
            raise ConfigError(f"ImageSpec.channels={self.channels!r} is invalid. Fix: use 1 (grayscale) or 3 (RGB).")
        if self.resize not in RESIZE_POLICIES:
            raise ConfigError(
                f"ImageSpec.resize={self.resize!r} is unknown. Fix: use one of {', '.join(RESIZE_POLICIES)}."
            )
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) not in (1, self.channels):
                raise ConfigError(
                    f"ImageSpec.{name}={values!r} has {len(values)} values for {self.channels} channel(s). "
                    f"Fix: give 1 value or {self.channels}."
                )
            try:
                floats = tuple(float(v) for v in values)
            except (TypeError, ValueError):
                raise ConfigError(f"ImageSpec.{name}={values!r} is not numeric. Fix: pass numbers.") from None
            if not all(math.isfinite(v) for v in floats):
                raise ConfigError(f"ImageSpec.{name}={values!r} is not finite. Fix: pass finite numbers.")
            object.__setattr__(self, name, floats)
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"ImageSpec.std={self.std!r} must be positive. Fix: pass values > 0, e.g. std=(0.25,).")

    @property
    def height(self) -> int:
        return self.size[0]

    @property
    def width(self) -> int:
        return self.size[1]

    def channel_mean(self) -> tuple[float, ...]:
        """`mean` broadcast to one value per channel."""
        return self.mean * self.channels if len(self.mean) == 1 else self.mean

    def channel_std(self) -> tuple[float, ...]:
        """`std` broadcast to one value per channel."""
        return self.std * self.channels if len(self.std) == 1 else self.std

    def to_dict(self) -> dict:
        """A JSON-ready dict; `ImageSpec.from_dict(spec.to_dict()) == spec`."""
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "ImageSpec":
        """Rebuild a spec from `to_dict()` output (e.g. a saved model's config.json)."""
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(
                f"ImageSpec: unknown field(s) {', '.join(unknown)}. "
                f"Fix: use only {', '.join(cls.__dataclass_fields__)}."
            )
        return cls(**d)


def read_image(path: Path | str) -> np.ndarray:
    """Decode an image file to uint8 pixels: HxW for grayscale, HxWx3 for colour.

    Handles PIL modes 1, L, LA, P, RGB, RGBA (alpha dropped), 16-bit (I;16 / I: 0..65535 scaled to
    0..255), F (floats in [0, 1] scaled to 0..255, otherwise clipped), CMYK and YCbCr; TIFF; and EXIF
    orientation (the returned array is upright). Raises DataError naming the file if it is missing,
    not an image, or truncated.
    """
    return read_pixels(path, "image")


def to_gray(pixels: np.ndarray) -> np.ndarray:
    """HxW uint8; colour is converted by ITU-R 601 luminance (as PIL and OpenCV do)."""
    if pixels.ndim == 2:
        return pixels
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        return pixels[:, :, 0]
    if pixels.ndim == 3 and pixels.shape[2] in (3, 4):
        return cv2.cvtColor(np.ascontiguousarray(pixels[:, :, :3]), cv2.COLOR_RGB2GRAY)
    raise DataError(
        f"pixel array of shape {pixels.shape} is neither HxW nor HxWx3. Fix: pass a grayscale or RGB image."
    )


def content_geometry(height: int, width: int, spec: ImageSpec) -> tuple[int, int, int, int]:
    """(new_height, new_width, top, left) of an image's resized content inside the spec.size canvas
    (with resize="pad", the box that holds the image; the rest is letterbox)."""
    out_h, out_w = spec.size
    if spec.resize == "stretch":
        return out_h, out_w, 0, 0
    scale = min(out_h / height, out_w / width)
    new_h = min(out_h, max(1, round(height * scale)))
    new_w = min(out_w, max(1, round(width * scale)))
    return new_h, new_w, (out_h - new_h) // 2, (out_w - new_w) // 2


def enlarges(height: int, width: int, spec: ImageSpec) -> bool:
    """True if `prepare_image` enlarges an image of this size (bilinear upsampling adds no detail)."""
    new_h, new_w, _, _ = content_geometry(height, width, spec)
    return new_h > height or new_w > width


def _place(resized: np.ndarray, spec: ImageSpec, top: int, left: int) -> np.ndarray:
    if resized.shape[:2] == spec.size:
        return resized
    canvas = np.zeros(spec.size + resized.shape[2:], dtype=resized.dtype)
    canvas[top : top + resized.shape[0], left : left + resized.shape[1]] = resized
    return canvas


def prepare_image(pixels: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """Bring decoded pixels (HxW or HxWx3 uint8) to uint8 (channels, H, W) at `spec.size`.

    Grayscale becomes 3 channels by repetition; colour becomes 1 channel by luminance. Shrinking uses
    area interpolation (no aliasing), enlarging uses bilinear.
    """
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        raise DataError(f"prepare_image got {pixels.dtype} pixels. Fix: pass uint8 pixels, e.g. from read_image().")
    if pixels.ndim == 3 and pixels.shape[2] in (1, 4):
        pixels = pixels[:, :, 0] if pixels.shape[2] == 1 else pixels[:, :, :3]
    if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] == 3)):
        raise DataError(f"prepare_image got pixels of shape {pixels.shape}. Fix: pass HxW (gray) or HxWx3 (RGB).")
    if spec.channels == 1 and pixels.ndim == 3:
        pixels = to_gray(pixels)
    height, width = pixels.shape[:2]
    new_h, new_w, top, left = content_geometry(height, width, spec)
    if (new_h, new_w) != (height, width):
        interp = cv2.INTER_LINEAR if enlarges(height, width, spec) else cv2.INTER_AREA
        pixels = cv2.resize(np.ascontiguousarray(pixels), (new_w, new_h), interpolation=interp)
    pixels = _place(pixels, spec, top, left)
    if pixels.ndim == 2:
        pixels = pixels[None]
        if spec.channels == 3:
            pixels = np.repeat(pixels, 3, axis=0)
        return np.ascontiguousarray(pixels)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def prepare_mask(mask: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """Bring a HxW mask to (H, W) at `spec.size` with the same geometry as `prepare_image`.

    Bool masks stay bool; integer class-index masks (uint8, int16, ...) keep their dtype and values.
    Nearest-neighbour keeps every pixel one of the input values, so classes never blend; the letterbox
    of "pad" is False / 0 (background).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise DataError(
            f"prepare_mask got an array of shape {mask.shape}. Fix: pass a HxW mask, e.g. from read_mask()."
        )
    is_bool = mask.dtype == bool
    if not (is_bool or np.issubdtype(mask.dtype, np.integer)):
        raise DataError(f"prepare_mask got a {mask.dtype} mask. Fix: pass a bool mask or integer class indices.")
    height, width = mask.shape
    new_h, new_w, top, left = content_geometry(height, width, spec)
    m = mask.astype(np.uint8) if is_bool else mask
    if (new_h, new_w) != (height, width):
        # OpenCV resizes 8/16/32-bit integers; wider class indices go through int32 and back.
        native = m.dtype in (np.uint8, np.int8, np.uint16, np.int16, np.int32)
        work = m if native else m.astype(np.int32)
        m = cv2.resize(np.ascontiguousarray(work), (new_w, new_h), interpolation=cv2.INTER_NEAREST).astype(m.dtype)
    m = _place(m, spec, top, left)
    return m.astype(bool) if is_bool else m


def normalise(batch_uint8: torch.Tensor, spec: ImageSpec) -> torch.Tensor:
    """float32 `(x / 255 - mean) / std` per channel, for (C, H, W) or (N, C, H, W) uint8 tensors."""
    import torch

    if batch_uint8.dtype != torch.uint8:
        raise DataError(
            f"normalise got a {batch_uint8.dtype} tensor. Fix: pass raw uint8 pixels "
            "(e.g. dataset.raw_images()); normalising twice would silently corrupt the values."
        )
    if batch_uint8.ndim not in (3, 4):
        raise DataError(f"normalise got shape {tuple(batch_uint8.shape)}. Fix: pass (C, H, W) or (N, C, H, W).")
    channels = batch_uint8.shape[-3]
    if channels != spec.channels:
        raise DataError(
            f"normalise got {channels} channel(s) but the ImageSpec has {spec.channels}. "
            "Fix: prepare the images with the same spec."
        )
    mean = torch.tensor(spec.channel_mean(), dtype=torch.float32, device=batch_uint8.device).view(-1, 1, 1)
    std = torch.tensor(spec.channel_std(), dtype=torch.float32, device=batch_uint8.device).view(-1, 1, 1)
    return (batch_uint8.to(torch.float32) / 255.0 - mean) / std
