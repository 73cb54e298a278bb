"""How mask files become class-index masks: binary masks of any colour, palette and gray class
indices, and the masks that are neither (refused with the file named, never read silently wrong)."""

import numpy as np
import pytest
from PIL import Image

from defectmine.data import class_list, read_class_mask, read_mask
from defectmine.data.images import ImageSpec, prepare_mask, read_image, to_gray
from defectmine.data.masks import class_dtype, mask_classes
from defectmine.data.records import Record
from defectmine.errors import DataError

CLASSES = ("background", "scratch", "spot")


def _save(path, array, mode=None):
    Image.fromarray(array, mode=mode).save(path)
    return path


def _block(value, dtype=np.uint8, shape=(8, 8)):
    a = np.zeros(shape, dtype)
    a[2:5, 3:7] = value
    return a


def _old_read_mask(path):
    """read_mask before class masks: luminance above 127."""
    return to_gray(read_image(path)) > 127


# ---------------------------------------------------------------- binary masks


def test_pure_red_is_a_defect(tmp_path):
    # Luminance of pure red is 76, below the 127 cut: the old reading lost every red defect.
    red = np.zeros((8, 8, 3), np.uint8)
    red[2:5, 3:7] = (255, 0, 0)
    path = _save(tmp_path / "red.png", red)
    np.testing.assert_array_equal(read_mask(path), _block(True, bool))
    np.testing.assert_array_equal(read_class_mask(path, 2, CLASSES), _block(2))


@pytest.mark.parametrize("defect", [255, 1, 200])
def test_binary_gray_mask_takes_the_record_class(tmp_path, defect):
    path = _save(tmp_path / "m.png", _block(defect))
    out = read_class_mask(path, 1, CLASSES)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, _block(1))
    np.testing.assert_array_equal(read_class_mask(path, 2, CLASSES), _block(2))


def test_zero_one_mask_is_binary_even_where_1_is_another_class(tmp_path):
    # {0, 1} is a binary mask: its 1s are the record's own class (here "spot" = 2), not class 1.
    path = _save(tmp_path / "m.png", _block(1))
    np.testing.assert_array_equal(read_class_mask(path, 2, CLASSES), _block(2))
    assert read_mask(path).sum() == 12


def test_binary_masks_read_exactly_as_before(tmp_path):
    # Existing benchmarks must not move: for black/white and noisy (JPEG-ish) masks the defect pixels
    # are the same as the old luminance > 127 reading, also for RGB-saved gray masks.
    rng = np.random.default_rng(0)
    noisy = _block(255, shape=(40, 40))
    noise_at = rng.random(noisy.shape) < 0.05
    noisy[noise_at] = rng.integers(0, 256, noise_at.sum())
    paths = [
        _save(tmp_path / "bw.png", _block(255, shape=(40, 40))),
        _save(tmp_path / "noisy.png", noisy),
        _save(tmp_path / "noisy_rgb.png", np.dstack([noisy] * 3)),
    ]
    Image.fromarray(_block(255, shape=(40, 40))).save(tmp_path / "lossy.jpg", quality=60)
    paths.append(tmp_path / "lossy.jpg")
    for path in paths:
        assert len(np.unique(np.asarray(Image.open(path)))) > 2 or path.name == "bw.png"
        np.testing.assert_array_equal(read_mask(path), _old_read_mask(path))
        np.testing.assert_array_equal(read_class_mask(path, 1, CLASSES) > 0, _old_read_mask(path))


def test_16bit_binary_mask(tmp_path):
    path = _save(tmp_path / "m16.png", _block(65535, np.uint16))
    assert Image.open(path).mode.startswith("I")
    np.testing.assert_array_equal(read_class_mask(path, 2, CLASSES), _block(2))


# ---------------------------------------------------------------- class-index masks


def test_gray_class_indices(tmp_path):
    indices = _block(1)
    indices[6:, :] = 2
    path = _save(tmp_path / "idx.png", indices)
    out = read_class_mask(path, 1, CLASSES)
    np.testing.assert_array_equal(out, indices)
    with pytest.raises(DataError, match="idx.png"):  # read_mask knows one defect class only
        read_mask(path)


def test_palette_uses_indices_not_colours(tmp_path):
    indices = _block(2)
    indices[6:, :] = 1
    im = Image.fromarray(indices, mode="L").convert("P")
    # index 1 drawn black and index 2 dark gray: the colours would read as "no defect" at all
    im.putpalette([0, 0, 0, 0, 0, 0, 10, 10, 10] + [0] * (253 * 3))
    im.putdata(indices.ravel().tolist())
    path = tmp_path / "p.png"
    im.save(path)
    assert Image.open(path).mode == "P"
    np.testing.assert_array_equal(read_class_mask(path, 1, CLASSES), indices)


def test_16bit_class_indices(tmp_path):
    indices = _block(2, np.uint16)
    indices[0, 0] = 1
    path = _save(tmp_path / "i16.png", indices)
    np.testing.assert_array_equal(read_class_mask(path, 1, CLASSES), indices.astype(np.uint8))


def test_more_than_256_classes_use_int16():
    classes = ("background", *(f"c{i}" for i in range(299)))
    assert class_dtype(256) == np.uint8 and class_dtype(257) == np.int16
    out = mask_classes(_block(255), "gray", 299, classes)  # 0/255 is binary even where 255 < C
    assert out.dtype == np.int16 and out.max() == 299
    np.testing.assert_array_equal(mask_classes(_block(200), "gray", 1, classes), _block(200))  # indices


# ---------------------------------------------------------------- neither: refused, file named


def test_values_beyond_the_class_count(tmp_path):
    values = _block(3)
    values[0, 0] = 5
    path = _save(tmp_path / "beyond.png", values)
    with pytest.raises(DataError) as e:
        read_class_mask(path, 1, CLASSES)
    message = str(e.value)
    assert str(path) in message and "0, 3, 5" in message and "background, scratch, spot" in message


def test_palette_indices_beyond_the_class_count(tmp_path):
    im = Image.fromarray(_block(7)).convert("P")
    im.putdata(_block(7).ravel().tolist())
    path = tmp_path / "p7.png"
    im.save(path)
    with pytest.raises(DataError, match=r"p7.png.*palette indices 0, 7 go beyond the 3 classes"):
        read_class_mask(path, 1, CLASSES)


def test_photo_as_mask_is_refused(tmp_path):
    photo = np.random.default_rng(0).integers(0, 256, (16, 16), dtype=np.uint8)
    path = _save(tmp_path / "photo.png", photo)
    with pytest.raises(DataError, match=r"photo.png.*mid-gray.*not a binary mask"):
        read_class_mask(path, 1, CLASSES)
    with pytest.raises(DataError, match="photo.png"):
        read_mask(path)


def test_normal_image_mask_must_be_empty(tmp_path):
    path = _save(tmp_path / "n.png", _block(255))
    with pytest.raises(DataError, match=r"n.png.*12 defect pixel\(s\) but its image is labelled normal"):
        read_class_mask(path, 0, CLASSES)
    assert not read_class_mask(_save(tmp_path / "empty.png", np.zeros((8, 8), np.uint8)), 0, CLASSES).any()


# ---------------------------------------------------------------- class lists and resizing


def test_class_list(tmp_path):
    records = [
        Record(tmp_path / "n.png", "normal"),
        Record(tmp_path / "b.png", "anomalous", "spot"),
        Record(tmp_path / "a.png", "anomalous", "crack"),
        Record(tmp_path / "c.png", "anomalous", "spot"),
        Record(tmp_path / "d.png", "anomalous"),  # no class given: "anomalous"
    ]
    assert class_list(records) == ("background", "anomalous", "crack", "spot")
    assert class_list(records[:1]) == ("background",)
    with pytest.raises(DataError, match="'background' is reserved"):
        class_list([Record(tmp_path / "x.png", "anomalous", "background")])


@pytest.mark.parametrize("resize", ["stretch", "pad"])
@pytest.mark.parametrize("size", [(24, 56), (7, 9)])
def test_resizing_keeps_classes(resize, size):
    indices = np.zeros((16, 16), np.uint8)
    indices[2:9, 2:9] = 1
    indices[9:15, 6:15] = 2
    out = prepare_mask(indices, ImageSpec(size=size, channels=1, resize=resize))
    assert out.dtype == np.uint8 and out.shape == size
    assert set(np.unique(out)) <= {0, 1, 2} and {1, 2} <= set(np.unique(out))
    # the binary view is exactly what a bool mask would have become
    np.testing.assert_array_equal(out > 0, prepare_mask(indices > 0, ImageSpec(size=size, channels=1, resize=resize)))
    wide = prepare_mask(indices.astype(np.int64) * 300, ImageSpec(size=size, channels=1, resize=resize))
    assert wide.dtype == np.int64 and set(np.unique(wide)) <= {0, 300, 600}
