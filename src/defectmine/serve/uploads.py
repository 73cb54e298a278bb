"""Uploaded bytes to model inputs, with the limits checked before any pixel is decoded.

An upload is checked in this order, each failure one `RequestError` (an HTTP status and a message that
names the file and the fix): empty (400), more bytes than the limit (413), not an image PIL recognises
from its header (415), more pixels than the limit, read from the header alone (413), then decoded by
predict's own path (`read_pixels_from_bytes` + `decode_item`: the same modes, EXIF rotation, resizing
and display copy), where a truncated or corrupt file fails (422).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from defectmine.data.images import ImageSpec
from defectmine.data.pixels import read_pixels_from_bytes
from defectmine.pipeline.predict_inputs import Decoded, decode_item


class RequestError(Exception):
    """A request the service refuses: `status` (4xx) and a message for the JSON answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class UploadLimits:
    """What one uploaded image may be: at most `max_bytes` bytes and `max_pixels` pixels (width x height,
    read from the header before decoding, so a small file that would expand to gigabytes is refused)."""

    max_bytes: int = 32 * 2**20
    max_pixels: int = 40_000_000


def decode_upload(data: bytes, name: str, spec: ImageSpec, limits: UploadLimits, display_side: int) -> Decoded:
    """One upload as a Decoded item (model input at `spec`, display copy of at most `display_side` px),
    or a RequestError. Runs in a worker thread: decoding is CPU work the event loop must not wait on."""
    if not data:
        raise RequestError(400, f"{name}: the upload is empty (0 bytes). Fix: send the image file's bytes.")
    if len(data) > limits.max_bytes:
        raise RequestError(413, f"{name}: {len(data)} bytes is more than the limit of {limits.max_bytes} bytes. "
                                "Fix: send a smaller image, or start the service with a larger --max-upload-mb.")
    try:
        with Image.open(io.BytesIO(data)) as header:  # reads the header only, no pixels
            width, height = header.size
    except Image.DecompressionBombError as err:  # PIL's own guard, above any sane --max-pixels
        raise RequestError(413, f"{name}: {err} Fix: send a smaller image.") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        raise RequestError(415, f"{name}: not an image (PIL recognises no image format in these bytes). "
                                "Fix: send a PNG, JPEG, BMP or TIFF file.") from None
    if width * height > limits.max_pixels:
        raise RequestError(413, f"{name}: {width} x {height} = {width * height} pixels is more than the limit of "
                                f"{limits.max_pixels}. Fix: send a smaller image, or start the service with a "
                                "larger --max-pixels.")
    # PIL's own decompression-bomb guard stays on; the limit above is the service's (usually lower) one.
    decoded = decode_item(0, lambda: read_pixels_from_bytes(data, name), spec, display_side)
    if decoded.model_input is None:
        raise RequestError(422, f"{name}: cannot read the image ({decoded.reason}). Fix: send the complete, "
                                "uncorrupted file.")
    return decoded
