"""Decoding image and mask files to numpy pixels: the only module that opens files with PIL.

Images are brought to uint8 gray or RGB (`read_pixels`); masks keep the values they were saved with
(`read_mask_values`: palette indices, raw 16-bit values), because those values may be class indices.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from defectmine.errors import DataError

# What `read_mask_values` found: palette indices, 8-bit gray, raw 16/32-bit integers, or colour.
PALETTE, GRAY, GRAY16, COLOUR = "palette", "gray", "gray16", "colour"


class UnreadableFileError(DataError):
    """An image or mask file that cannot be decoded; `path` and `reason` let callers list many at once."""

    def __init__(self, path: Path | str, what: str, reason: str, fix: str | None = None) -> None:
        self.path = Path(path)
        self.what = what
        self.reason = reason
        self.fix = fix or "replace or remove the file, or pass --skip-bad to skip it"
        super().__init__(f"{path}: cannot read {what} ({reason}). Fix: {self.fix}.")


def _pil_to_array(im: Image.Image) -> np.ndarray:
    """uint8 HxW for single-channel modes, HxWx3 for colour modes."""
    mode = im.mode
    if mode in ("1", "L"):
        return np.asarray(im if mode == "L" else im.convert("L"))  # a same-mode convert would copy
    if mode in ("LA", "La"):
        return np.asarray(im.getchannel(0))
    if mode.startswith("I;16") or mode == "I":
        # 16-bit PNGs open as I;16 (newer Pillow) or I (older); both are scaled by the full 16-bit
        # range so that brightness is comparable across files, not stretched per image.
        return scale_16bit(np.asarray(im))
    if mode == "F":
        arr = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        # Float images are usually in [0, 1]; anything beyond that is taken as already 0..255.
        if arr.size and arr.min() >= 0.0 and arr.max() <= 1.0:
            arr = arr * 255.0
        return np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im
    if mode == "PA":
        im = im.convert("RGBA")
    return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))


def scale_16bit(values: np.ndarray) -> np.ndarray:
    """uint8 from 16-bit values, scaled by the full 0..65535 range (65535 -> 255)."""
    arr = np.asarray(values).astype(np.float64)
    return np.clip(np.rint(arr * (255.0 / 65535.0)), 0, 255).astype(np.uint8)


def _decode(path: Path | str, what: str, to_array) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        reason = "is a folder" if path.is_dir() else "file not found"
        raise UnreadableFileError(path, what, reason)
    return _decode_source(path, path, what, to_array)


def _decode_source(source, name, what: str, to_array) -> np.ndarray:
    """Decode `source` (a path or a binary file object); errors name it as `name`."""
    try:
        with Image.open(source) as im:
            # load() decodes every pixel now, so truncated files fail here and not mid-training.
            im.load()
            im = ImageOps.exif_transpose(im)
            arr = to_array(im)
    except UnidentifiedImageError:
        raise UnreadableFileError(name, what, "not an image file or an unsupported format") from None
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        raise UnreadableFileError(name, what, str(e) or type(e).__name__) from None
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise UnreadableFileError(name, what, f"unexpected pixel array shape {arr.shape}")
    return np.array(arr, order="C")  # a writable copy: PIL arrays are read-only


def read_pixels(path: Path | str, what: str = "image") -> np.ndarray:
    """uint8 HxW (gray) or HxWx3 (colour) pixels of a file; UnreadableFileError names it if it fails."""
    return _decode(path, what, _pil_to_array).astype(np.uint8, copy=False)


def read_pixels_from_bytes(data: bytes, name: str, what: str = "image") -> np.ndarray:
    """`read_pixels` of a file held in memory (an upload): the same modes, EXIF rotation and errors,
    which name the file as `name`."""
    return _decode_source(io.BytesIO(data), name, what, _pil_to_array).astype(np.uint8, copy=False)


def _mask_array(im: Image.Image) -> tuple[np.ndarray, str]:
    mode = im.mode
    if mode == "P":
        return np.asarray(im), PALETTE  # the indices, not the colours they are drawn in
    if mode == "PA":
        return np.asarray(im.getchannel(0)), PALETTE
    if mode.startswith("I;16") or mode == "I":
        return np.asarray(im).astype(np.int64), GRAY16  # raw: small values may be class indices
    arr = _pil_to_array(im)
    if arr.ndim == 3 and (arr == arr[:, :, :1]).all():
        return arr[:, :, 0], GRAY  # a gray mask saved as RGB
    return arr, (COLOUR if arr.ndim == 3 else GRAY)


def read_mask_values(path: Path | str) -> tuple[np.ndarray, str]:
    """A mask file's values as saved, and what they are: (HxW indices, "palette"), (HxW uint8, "gray"),
    (HxW int64 raw 16/32-bit values, "gray16") or (HxWx3 uint8, "colour"). RGB files whose three
    channels are equal everywhere count as "gray". See `defectmine.data.masks` for their meaning."""
    holder: dict[str, str] = {}

    def to_array(im: Image.Image) -> np.ndarray:
        arr, holder["kind"] = _mask_array(im)
        return arr

    arr = _decode(path, "mask", to_array)
    return arr, holder["kind"]
