"""Label Studio brush RLE and COCO RLE: round trips on random masks and the format's published test vector."""

import numpy as np
import pytest

from defectmine.errors import DataError
from defectmine.labelling.brush import decode_values, encode_values, mask_to_rle, rle_to_mask
from defectmine.labelling.coco import decode_segmentation, encode_mask, rle_area_bbox


def test_known_vector_of_label_studio_converter():
    # label-studio-converter's tests/test_brush.py: encode_rle of this array gives these bytes.
    values = [1, 1, 1, 1, 2, 3, 5, 6, 7, 8, 4, 4, 4, 4, 4, 4, 4, 4]
    expected = [0, 0, 0, 18, 57, 27, 252, 96, 32, 1, 0, 6, 0, 40, 0, 192, 3, 128, 17, 56, 32]
    assert encode_values(np.array(values)) == expected
    assert decode_values(expected).tolist() == values


def test_decoder_reads_literal_runs_of_several_values():
    # rle-pack (the JS encoder Label Studio uses) writes literal chunks of several values: flag 0,
    # size index 0 (3 bits), count - 1 = 2, then three 8-bit words; header num=3, word size 8, sizes 3,4,8,16.
    bits = f"{3:032b}{7:05b}{2:04b}{3:04b}{7:04b}{15:04b}" + "0" + "00" + "010" + "".join(f"{v:08b}" for v in (9, 200, 3))
    bits += "0" * (-len(bits) % 8)
    data = [int(bits[i:i + 8], 2) for i in range(0, len(bits), 8)]
    assert decode_values(data).tolist() == [9, 200, 3]


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (64, 48), (300, 260)])
def test_brush_round_trip_on_random_masks(shape):
    rng = np.random.default_rng(sum(shape))
    for density in (0.0, 0.05, 0.5, 1.0):
        mask = rng.random(shape) < density
        assert np.array_equal(rle_to_mask(mask_to_rle(mask), *shape), mask)


def test_long_runs_are_split_and_read_back():
    values = np.zeros(3 * 65536 + 5, dtype=np.uint8)
    values[-2:] = 255
    assert np.array_equal(decode_values(encode_values(values)), values)


def test_brush_rle_of_another_size_or_cut_off_is_refused():
    rle = mask_to_rle(np.ones((4, 6), bool))
    with pytest.raises(DataError, match="6x5 image needs 120"):
        rle_to_mask(rle, 5, 6, source="task 1")
    with pytest.raises(DataError, match="cut off"):
        decode_values(mask_to_rle(np.eye(9, dtype=bool))[:-3])
    with pytest.raises(DataError, match="0..255"):
        decode_values([1, 300])


def test_coco_rle_round_trip_area_and_bbox():
    rng = np.random.default_rng(0)
    mask = rng.random((33, 21)) < 0.3
    rle = encode_mask(mask)
    assert isinstance(rle["counts"], str) and rle["size"] == [33, 21]
    assert np.array_equal(decode_segmentation(rle, 33, 21, source="a"), mask)
    square = np.zeros((10, 10), bool)
    square[2:5, 3:7] = True
    assert rle_area_bbox(encode_mask(square)) == (12, [3.0, 2.0, 4.0, 3.0])


def test_coco_polygons_and_uncompressed_rle():
    poly = [[1, 1, 8, 1, 8, 6, 1, 6]]
    mask = decode_segmentation(poly, 10, 10, source="a")
    assert mask[3, 4] and not mask[8, 8]
    uncompressed = {"size": [3, 2], "counts": [1, 2, 3]}  # column-major: 1 off, 2 on, 3 off
    assert decode_segmentation(uncompressed, 3, 2, source="a").T.ravel().tolist() == [0, 1, 1, 0, 0, 0]
    with pytest.raises(DataError, match=r"is \[4, 4\]"):
        decode_segmentation(encode_mask(np.ones((5, 4))), 4, 4, source="ann 1")
    with pytest.raises(DataError, match="neither an RLE"):
        decode_segmentation("nonsense", 4, 4, source="ann 1")
