"""Label Studio's brush RLE: the `value.rle` of a `brushlabels` result, encoded and decoded.

Label Studio stores a brush mask as the RGBA pixels of the image (height x width x 4 bytes, row-major)
packed by thi.ng's rle-pack: a bit stream (most significant bit first) of

    num (32 bits)  word_size - 1 (5 bits)  4 x (run-size bits - 1) (4 bits each)
    then chunks until `num` values are read:
        1, size index (2 bits), run length - 1 (run-size bits), value (word_size bits)   a repeated value
        0, size index (2 bits), count - 1 (run-size bits), count x value (word_size)     literal values

padded with zero bits to whole bytes. Label Studio reads the alpha channel as the mask. We write what
label-studio-converter writes (word size 8, run sizes 3, 4, 8, 16; every RGBA byte of a defect pixel
255), so its test vector is ours too, and read any word size and run sizes.

label-studio-converter does this with string concatenation and pulls in a web SDK; this module is the
format alone, on numpy arrays.
"""

from __future__ import annotations

import numpy as np

from defectmine.errors import DataError

WORD_SIZE = 8
RUN_SIZES = (3, 4, 8, 16)
_HEADER_BITS = 32 + 5 + 4 * 4


def encode_values(values: np.ndarray) -> list[int]:
    """The rle-pack bytes (a list of ints 0..255, as in a Label Studio JSON) of a 1-d uint8 array."""
    values = np.asarray(values).ravel()
    if values.size and (values.min() < 0 or values.max() > 255):
        raise DataError("brush RLE: values must be bytes (0..255). Fix: pass a uint8 array.")
    values = values.astype(np.int64)
    fields_value: list[np.ndarray] = [np.array([values.size, WORD_SIZE - 1, *(s - 1 for s in RUN_SIZES)])]
    fields_width: list[np.ndarray] = [np.array([32, 5, 4, 4, 4, 4])]
    if values.size:
        starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
        lengths = np.diff(np.r_[starts, values.size])
        run_values = values[starts]
        # Runs longer than the largest run size are cut into chunks of at most 2**16 values.
        longest = 1 << RUN_SIZES[-1]
        chunks = -(-lengths // longest)
        run_values = np.repeat(run_values, chunks)
        ends = np.cumsum(chunks)
        chunk_lengths = np.full(int(ends[-1]), longest)
        chunk_lengths[ends - 1] = lengths - (chunks - 1) * longest
        single = chunk_lengths == 1
        size_index = np.searchsorted(np.array([1 << s for s in RUN_SIZES]), chunk_lengths)
        size_index[single] = 0
        size_bits = np.array(RUN_SIZES)[size_index]
        # per chunk: flag (1), size index (2), length - 1 (size bits), value (8)
        per_chunk_value = np.stack([(~single).astype(np.int64), size_index, chunk_lengths - 1, run_values], axis=1)
        per_chunk_width = np.stack([np.ones_like(size_bits), np.full_like(size_bits, 2), size_bits,
                                    np.full_like(size_bits, WORD_SIZE)], axis=1)
        fields_value.append(per_chunk_value.ravel())
        fields_width.append(per_chunk_width.ravel())
    return list(np.packbits(_bits(np.concatenate(fields_value), np.concatenate(fields_width))).tolist())


def _bits(field_values: np.ndarray, field_widths: np.ndarray) -> np.ndarray:
    """The bits (uint8 0/1, most significant first) of fields of given widths, written one after another."""
    starts = np.r_[0, np.cumsum(field_widths)[:-1]]
    out = np.zeros(int(field_widths.sum()), dtype=np.uint8)
    for k in range(int(field_widths.max())):  # bit k of every field at once
        has = field_widths > k
        shift = field_widths[has] - 1 - k
        out[starts[has] + k] = (field_values[has] >> shift) & 1
    return out


def decode_values(rle) -> np.ndarray:
    """The values (1-d uint8) of rle-pack bytes. Raises DataError when the bytes end early."""
    try:
        data = np.asarray(rle, dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError("brush RLE: 'rle' must be a list of byte values. Fix: pass value.rle as exported.") from None
    if data.ndim != 1 or (data.size and (data.min() < 0 or data.max() > 255)):
        raise DataError("brush RLE: 'rle' must be a flat list of integers 0..255. Fix: pass value.rle as exported.")
    bits = np.unpackbits(data.astype(np.uint8))
    reader = _BitReader(bits)
    num = reader.read(32)
    word_size = reader.read(5) + 1
    run_sizes = [reader.read(4) + 1 for _ in range(4)]
    out = np.zeros(num, dtype=np.uint8 if word_size <= 8 else np.uint32)
    i = 0
    while i < num:
        repeated = reader.read(1)
        j = min(num, i + 1 + reader.read(run_sizes[reader.read(2)]))
        if repeated:
            out[i:j] = reader.read(word_size)
        else:
            out[i:j] = reader.read_many(j - i, word_size)
        i = j
    return out


class _BitReader:
    def __init__(self, bits: np.ndarray) -> None:
        self.bits, self.at = bits, 0

    def _take(self, n: int) -> np.ndarray:
        if self.at + n > self.bits.size:
            raise DataError("brush RLE: the data ends before all pixels are read (cut off). "
                            "Fix: export the annotations again from Label Studio.")
        part = self.bits[self.at:self.at + n]
        self.at += n
        return part

    def read(self, n: int) -> int:
        value = 0
        for bit in self._take(n).tolist():
            value = (value << 1) | bit
        return value

    def read_many(self, count: int, width: int) -> np.ndarray:
        words = self._take(count * width).reshape(count, width).astype(np.int64)
        return words @ (1 << np.arange(width - 1, -1, -1, dtype=np.int64))


def mask_to_rle(mask: np.ndarray) -> list[int]:
    """Label Studio brush RLE of a 2-d mask (bool or 0/1 or 0/255): defect pixels 255 in all 4 channels."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise DataError(f"brush RLE: a mask must be 2-d (height, width), got shape {mask.shape}.")
    pixels = np.where(mask > 0, 255, 0).astype(np.uint8)
    return encode_values(np.repeat(pixels.ravel(), 4))


def rle_to_mask(rle, height: int, width: int, *, source: str = "brush RLE") -> np.ndarray:
    """The bool mask (height, width) of a Label Studio brush RLE (the alpha channel, > 0).

    Raises DataError naming `source` when the RLE does not hold height x width RGBA pixels."""
    values = decode_values(rle)
    if values.size != height * width * 4:
        raise DataError(
            f"{source}: the brush mask holds {values.size} values, but a {width}x{height} image needs "
            f"{height * width * 4} (RGBA). Fix: the annotation belongs to an image of another size; "
            "check original_width / original_height and that the task points at the right image."
        )
    return values.reshape(height, width, 4)[:, :, 3] > 0
