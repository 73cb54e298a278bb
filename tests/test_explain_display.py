import numpy as np
import pytest
import torch

from defectmine.errors import ConfigError
from defectmine.explain import as_rgb_uint8, colorize, display_range, grid, overlay, to_unit


def test_display_range_is_min_and_quarter_max_over_the_whole_set():
    a = np.array([[1.0, 2.0], [3.0, 40.0]])
    b = torch.tensor([[0.5, 8.0, float("nan")]])
    assert display_range([a, b]) == (0.5, 10.0)
    assert display_range(a, q=0.5) == (1.0, 20.0)
    assert display_range(torch.from_numpy(a), q=1.0) == (1.0, 40.0)


def test_display_range_degenerate_cases_give_hi_above_lo():
    lo, hi = display_range(np.full((3, 3), 2.0))
    assert lo == 2.0 and hi > lo
    lo, hi = display_range(np.array([-4.0, -1.0]))  # q * max = -0.25 > min: kept as is
    assert (lo, hi) == (-4.0, -0.25)
    lo, hi = display_range(np.array([1.0, 2.0]), q=0.25)  # 0.5 < 1: collapses
    assert lo == 1.0 and 1.0 < hi < 1.001


@pytest.mark.parametrize("q", [0.0, -0.1, 1.5, float("nan")])
def test_display_range_rejects_bad_q(q):
    with pytest.raises(ConfigError, match="q must be in"):
        display_range(np.ones(3), q=q)


def test_display_range_rejects_all_nan():
    with pytest.raises(ConfigError, match="no finite"):
        display_range([np.full(3, np.nan)])


def test_to_unit_clips_and_maps_nan_to_zero():
    out = to_unit(np.array([-1.0, 0.0, 5.0, 10.0, 20.0, np.nan]), 0.0, 10.0)
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0, 0.0])
    assert out.dtype == np.float32
    with pytest.raises(ConfigError):
        to_unit(np.ones(2), 1.0, 1.0)


def test_colorize_uses_the_colormap_ends():
    rgb = colorize(np.array([[0.0, 1.0]]), 0.0, 1.0, cmap="gray")
    assert rgb.shape == (1, 2, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[0, 1].tolist() == [255, 255, 255]
    with pytest.raises(ConfigError, match="colormap"):
        colorize(np.zeros((2, 2)), 0.0, 1.0, cmap="no-such-map")


@pytest.mark.parametrize(
    "image",
    [
        np.full((20, 30), 100, np.uint8),
        np.full((20, 30, 3), 100, np.uint8),
        np.full((3, 20, 30), 100, np.uint8),
        np.full((1, 20, 30), 100, np.uint8),
        np.full((20, 30, 1), 100, np.uint8),
    ],
    ids=["gray", "rgb", "chw3", "chw1", "hw1"],
)
@pytest.mark.parametrize("heat_shape", [(20, 30), (5, 6)])
def test_overlay_shapes_and_dtype(image, heat_shape):
    heat = np.zeros(heat_shape)
    out = overlay(image, heat, 0.0, 1.0, alpha=0.5, cmap="gray")
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    assert (out == 50).all()  # half of 100 blended with black


def test_overlay_alpha_ends_and_resized_hot_region():
    img = np.zeros((16, 16, 3), np.uint8)
    heat = np.zeros((4, 4))
    heat[0, 0] = 1.0
    out = overlay(img, heat, 0.0, 1.0, alpha=1.0, cmap="gray")
    assert out[0, 0].tolist() == [255, 255, 255] and out[15, 15].tolist() == [0, 0, 0]
    assert (overlay(img + 7, heat, 0.0, 1.0, alpha=0.0) == 7).all()
    with pytest.raises(ConfigError):
        overlay(img, heat, 0.0, 1.0, alpha=1.5)


def test_as_rgb_uint8_float_and_bad_shapes():
    assert as_rgb_uint8(np.ones((2, 2), np.float32))[0, 0].tolist() == [255, 255, 255]
    with pytest.raises(ConfigError):
        as_rgb_uint8(np.zeros((8, 8, 4), np.uint8))


def test_grid_shape_and_tile_placement():
    a = np.full((10, 12, 3), 10, np.uint8)
    b = np.full((5, 6), 200, np.uint8)  # resized to 10x12
    out = grid([a, b, a, b, a], ncols=2, pad=3)
    assert out.shape == (3 * 10 + 4 * 3, 2 * 12 + 3 * 3, 3) and out.dtype == np.uint8
    assert (out[3:13, 3:15] == 10).all()
    assert (out[3:13, 18:30] == 200).all()
    assert (out[-13:-3, 18:30] == 255).all()  # empty slot stays white


def test_grid_captions_add_a_strip_with_text():
    a = np.full((40, 80, 3), 0, np.uint8)
    plain = grid([a, a], ncols=4, pad=2)
    cap = grid([a, a], ncols=4, pad=2, captions=["x.png 0.93 anomalous", "<b>"])
    assert plain.shape == (44, 166, 3)
    assert cap.shape[0] > plain.shape[0] and cap.shape[1] == plain.shape[1]
    strip = cap[42:-2, 2:82]
    assert (strip < 128).any()  # some dark text pixels in the white strip
    with pytest.raises(ConfigError):
        grid([a, a], captions=["only one"])
    with pytest.raises(ConfigError):
        grid([])
