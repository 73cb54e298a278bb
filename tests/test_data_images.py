import json

import numpy as np
import pytest
import torch
from PIL import Image

from defectmine.data.images import (
    ImageSpec,
    normalise,
    prepare_image,
    prepare_mask,
    read_image,
    read_mask,
)
from defectmine.errors import ConfigError, DataError


def _gray(h=10, w=20):
    return (np.arange(h * w).reshape(h, w) % 256).astype(np.uint8)


def _rgb(h=10, w=20):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------- read_image: modes and formats


def test_read_gray_png(tmp_path):
    path = tmp_path / "g.png"
    Image.fromarray(_gray()).save(path)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (10, 20)
    np.testing.assert_array_equal(out, _gray())
    out[0, 0] = 1  # writable, unlike PIL's own arrays


def test_read_rgb_png(tmp_path):
    path = tmp_path / "c.png"
    Image.fromarray(_rgb()).save(path)
    np.testing.assert_array_equal(read_image(path), _rgb())


def test_read_rgba_drops_alpha(tmp_path):
    rgba = np.dstack([_rgb(), np.full((10, 20), 7, np.uint8)])
    path = tmp_path / "a.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    out = read_image(path)
    assert out.shape == (10, 20, 3)
    np.testing.assert_array_equal(out, _rgb())


def test_read_la_drops_alpha(tmp_path):
    path = tmp_path / "la.png"
    Image.fromarray(_gray()).convert("LA").save(path)
    out = read_image(path)
    assert out.shape == (10, 20)
    np.testing.assert_array_equal(out, _gray())


def test_read_palette(tmp_path):
    colours = np.zeros((10, 20, 3), np.uint8)
    colours[:, 10:] = (255, 0, 0)
    path = tmp_path / "p.png"
    im = Image.fromarray(colours).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    assert im.mode == "P"
    im.save(path)
    out = read_image(path)
    assert out.shape == (10, 20, 3)
    np.testing.assert_array_equal(out, colours)


def test_read_palette_with_transparency(tmp_path):
    path = tmp_path / "pt.png"
    im = Image.fromarray(_gray()).convert("P")
    im.info["transparency"] = 0
    im.save(path, transparency=0)
    out = read_image(path)
    assert out.shape == (10, 20, 3) and out.dtype == np.uint8


def test_read_16bit_png_scaled_by_full_range(tmp_path):
    arr = np.array([[0, 257, 32768, 65535]], dtype=np.uint16).repeat(3, axis=0)
    path = tmp_path / "d.png"
    Image.fromarray(arr).save(path)
    assert Image.open(path).mode.startswith("I")
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (3, 4)
    np.testing.assert_array_equal(out[0], [0, 1, 128, 255])


def test_read_32bit_int_tiff(tmp_path):
    arr = np.array([[0, 65535, 70000]], dtype=np.int32)
    path = tmp_path / "i.tif"
    Image.fromarray(arr, mode="I").save(path)
    np.testing.assert_array_equal(read_image(path)[0], [0, 255, 255])


def test_read_float_tiff(tmp_path):
    arr = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    path = tmp_path / "f.tif"
    Image.fromarray(arr, mode="F").save(path)
    np.testing.assert_array_equal(read_image(path)[0], [0, 128, 255])


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_read_tiff(tmp_path, mode):
    data = _gray() if mode == "L" else _rgb()
    path = tmp_path / "t.tiff"
    Image.fromarray(data).save(path)
    np.testing.assert_array_equal(read_image(path), data)


def test_read_cmyk(tmp_path):
    path = tmp_path / "k.jpg"
    Image.fromarray(_rgb()).convert("CMYK").save(path)
    out = read_image(path)
    assert out.shape == (10, 20, 3) and out.dtype == np.uint8


def test_read_exif_rotated_jpeg_is_upright(tmp_path):
    stored = np.zeros((10, 20), np.uint8)
    stored[:, :10] = 220  # left half bright
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": the stored left side becomes the top
    path = tmp_path / "rot.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    out = read_image(path)
    assert out.shape == (20, 10)
    assert out[:10].mean() > 200 > 30 > out[10:].mean()


def test_read_mask_thresholds_gray_and_colour(tmp_path):
    values = np.zeros((4, 4), np.uint8)
    values[0] = [0, 127, 128, 255]  # a few noisy values in a black mask, as in JPEG-ish masks
    expected = np.zeros((4, 4), bool)
    expected[0] = [False, False, True, True]
    Image.fromarray(values).save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), expected)
    Image.fromarray(np.dstack([values] * 3)).save(tmp_path / "c.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "c.png"), expected)
    assert read_mask(tmp_path / "m.png", threshold=0).sum() == 3


# ---------------------------------------------------------------- read_image: bad files


def test_truncated_image_names_file(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(_rgb(64, 64)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="cut.png: cannot read image") as e:
        read_image(path)
    assert "--skip-bad" in str(e.value)


def test_truncated_jpeg_names_file(tmp_path):
    path = tmp_path / "cut.jpg"
    Image.fromarray(_rgb(64, 64)).save(path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DataError, match="cut.jpg"):
        read_image(path)


def test_non_image_with_image_suffix(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    with pytest.raises(DataError, match="notes.png: cannot read image"):
        read_image(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.png.*not found"):
        read_image(tmp_path / "nope.png")


def test_bad_mask_says_mask(tmp_path):
    path = tmp_path / "m.png"
    path.write_bytes(b"\x89PNG junk")
    with pytest.raises(DataError, match="m.png: cannot read mask"):
        read_mask(path)


# ---------------------------------------------------------------- prepare_image / prepare_mask


def test_stretch_resizes_to_size():
    spec = ImageSpec(size=(16, 24), channels=1)
    out = prepare_image(_gray(10, 20), spec)
    assert out.shape == (1, 16, 24) and out.dtype == np.uint8


def test_pad_keeps_aspect_and_letterboxes_with_zeros():
    spec = ImageSpec(size=(32, 32), channels=1, resize="pad")
    out = prepare_image(np.full((20, 40), 200, np.uint8), spec)  # 2:1 → 16x32 content, 8 rows above and below
    assert out.shape == (1, 32, 32)
    assert (out[0, :8] == 0).all() and (out[0, 24:] == 0).all()
    assert (out[0, 8:24] == 200).all()


def test_pad_tall_image_pads_columns():
    spec = ImageSpec(size=(16, 16), channels=1, resize="pad")
    out = prepare_image(np.full((64, 16), 90, np.uint8), spec)  # → 16x4 content, centred
    assert (out[0, :, 6:10] == 90).all() and (out[0, :, :6] == 0).all() and (out[0, :, 10:] == 0).all()


def test_channel_conversion():
    gray = _gray()
    three = prepare_image(gray, ImageSpec(size=(10, 20), channels=3))
    assert three.shape == (3, 10, 20)
    assert (three[0] == three[1]).all() and (three[1] == three[2]).all()
    np.testing.assert_array_equal(three[0], gray)
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    one = prepare_image(red, ImageSpec(size=(4, 4), channels=1))
    assert one.shape == (1, 4, 4) and int(one[0, 0, 0]) == 76  # luminance 0.299 * 255
    rgb = prepare_image(_rgb(), ImageSpec(size=(10, 20), channels=3))
    np.testing.assert_array_equal(rgb, _rgb().transpose(2, 0, 1))


def test_prepare_image_rejects_bad_input():
    with pytest.raises(DataError, match="uint8"):
        prepare_image(np.zeros((4, 4), np.float32), ImageSpec(size=(4, 4)))
    with pytest.raises(DataError, match="shape"):
        prepare_image(np.zeros((4, 4, 2), np.uint8), ImageSpec(size=(4, 4)))


@pytest.mark.parametrize("resize", ["stretch", "pad"])
@pytest.mark.parametrize("shape", [(12, 40), (90, 30), (64, 64)])
def test_mask_aligns_with_image(resize, shape):
    h, w = shape
    mask = np.zeros(shape, bool)
    mask[h // 4 : h // 2, w // 3 : (2 * w) // 3] = True
    spec = ImageSpec(size=(32, 24), channels=1, resize=resize)
    image = prepare_image(mask.astype(np.uint8) * 255, spec)[0].astype(float) / 255
    prepared = prepare_mask(mask, spec)
    assert prepared.dtype == bool and prepared.shape == (32, 24)
    ys, xs = np.mgrid[:32, :24]
    mask_centre = (ys[prepared].mean(), xs[prepared].mean())
    image_centre = ((image * ys).sum() / image.sum(), (image * xs).sum() / image.sum())
    # the same block in the same place, up to interpolation at its edges
    assert np.allclose(mask_centre, image_centre, atol=0.75)
    assert abs(prepared.sum() - image.sum()) <= 0.2 * image.sum() + 2


@pytest.mark.parametrize("shape", [(10, 40), (40, 10), (7, 9)])
def test_pad_letterbox_is_the_same_for_image_and_mask(shape):
    spec = ImageSpec(size=(16, 16), channels=1, resize="pad")
    content = prepare_image(np.full(shape, 255, np.uint8), spec)[0] > 0
    full_mask = prepare_mask(np.ones(shape, bool), spec)
    np.testing.assert_array_equal(content, full_mask)
    assert not full_mask.all()


# ---------------------------------------------------------------- normalise


def test_normalise_single_and_batch():
    spec = ImageSpec(size=(2, 2), channels=3, mean=(0.0, 0.5, 1.0), std=(1.0, 0.5, 0.25))
    x = torch.full((3, 2, 2), 255, dtype=torch.uint8)
    out = normalise(x, spec)
    assert out.dtype == torch.float32 and out.shape == (3, 2, 2)
    torch.testing.assert_close(out[:, 0, 0], torch.tensor([1.0, 1.0, 0.0]))
    batch = normalise(x[None].repeat(4, 1, 1, 1), spec)
    assert batch.shape == (4, 3, 2, 2)
    torch.testing.assert_close(batch[2], out)


def test_normalise_broadcasts_single_mean():
    spec = ImageSpec(size=(2, 2), channels=3)
    out = normalise(torch.zeros((3, 2, 2), dtype=torch.uint8), spec)
    torch.testing.assert_close(out, torch.full((3, 2, 2), -2.0))


def test_normalise_rejects_float_and_wrong_channels():
    spec = ImageSpec(size=(2, 2), channels=1)
    with pytest.raises(DataError, match="uint8"):
        normalise(torch.zeros((1, 2, 2)), spec)
    with pytest.raises(DataError, match="channel"):
        normalise(torch.zeros((3, 2, 2), dtype=torch.uint8), spec)


# ---------------------------------------------------------------- ImageSpec


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"size": (0, 4)}, "size"),
        ({"size": (4,)}, "size"),
        ({"size": (4.5, 4)}, "size"),
        ({"channels": 2}, "channels"),
        ({"resize": "crop"}, "resize"),
        ({"mean": (0.1, 0.2)}, "mean"),
        ({"std": (0.0,)}, "std"),
        ({"std": ("x",)}, "std"),
    ],
)
def test_spec_validation_names_field(kwargs, field):
    with pytest.raises(ConfigError, match=f"ImageSpec.{field}"):
        ImageSpec(**kwargs)


def test_spec_json_round_trip():
    spec = ImageSpec(size=(64, 48), channels=3, resize="pad", mean=(0.1, 0.2, 0.3), std=(0.5,))
    again = ImageSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and hash(again) == hash(spec)
    assert again.channel_std() == (0.5, 0.5, 0.5)
    with pytest.raises(ConfigError, match="colour"):
        ImageSpec.from_dict({**spec.to_dict(), "colour": 1})
