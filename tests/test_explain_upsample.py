import math

import numpy as np
import pytest
import torch

from defectmine.errors import ConfigError
from defectmine.explain import gaussian_upsample


def reference_upsample(hmap: np.ndarray, h: int, w: int, sigma: float) -> np.ndarray:
    """The paper's algorithm, literally: every cell d adds d * G2(c1, c2, sigma) to H'."""
    u, v = hmap.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.zeros((h, w))
    for i in range(u):
        for j in range(v):
            c1 = (i + 0.5) * h / u - 0.5
            c2 = (j + 0.5) * w / v - 0.5
            g2 = np.exp(-((ys - c1) ** 2 + (xs - c2) ** 2) / (2 * sigma**2)) / (2 * math.pi * sigma**2)
            out += hmap[i, j] * g2
    return out


def test_matches_per_cell_reference_raw_and_normalised():
    rng = np.random.default_rng(0)
    hmap = rng.random((4, 5))
    h, w, sigma = 16, 30, 2.5
    ref = reference_upsample(hmap, h, w, sigma)
    maps = torch.from_numpy(hmap)[None]

    raw = gaussian_upsample(maps, (h, w), sigma, normalize=False)[0].numpy()
    np.testing.assert_allclose(raw, ref, rtol=1e-10, atol=1e-12)

    # Normalised = reference divided by the reference of an all-ones map (the weight sum).
    norm = gaussian_upsample(maps, (h, w), sigma)[0].numpy()
    np.testing.assert_allclose(norm, ref / reference_upsample(np.ones((4, 5)), h, w, sigma), rtol=1e-9)


def test_output_shape_dtype_and_channel_axis():
    maps = torch.rand(3, 7, 9)
    out = gaussian_upsample(maps, (56, 40))
    assert out.shape == (3, 56, 40)
    assert out.dtype == torch.float32
    out4 = gaussian_upsample(maps[:, None], (56, 40))
    assert out4.shape == (3, 56, 40)
    torch.testing.assert_close(out4, out)
    assert gaussian_upsample(maps.double(), (8, 8)).dtype == torch.float64
    assert gaussian_upsample(maps.half(), (8, 8)).dtype == torch.float16
    assert gaussian_upsample(torch.ones(1, 2, 2, dtype=torch.int64), (8, 8)).dtype == torch.float32


def test_single_hot_cell_peaks_at_its_receptive_field_centre():
    maps = torch.zeros(2, 4, 6)
    maps[0, 1, 4] = 1.0
    maps[1, 3, 0] = 1.0
    out = gaussian_upsample(maps, (32, 48))  # 8 px cells along both axes
    y, x = np.unravel_index(int(out[0].argmax()), (32, 48))
    # Centre of cell (1, 4) is (11.5, 35.5): the peak is one of the 4 pixels around it.
    assert y in (11, 12) and x in (35, 36)
    # A border cell: normalisation lets the half cell beyond its centre belong to it alone, so
    # the maximum may sit on the image edge, but it stays inside the cell's receptive field.
    y, x = np.unravel_index(int(out[1].argmax()), (32, 48))
    assert 24 <= y < 32 and 0 <= x < 8
    raw = gaussian_upsample(maps, (32, 48), normalize=False)
    y, x = np.unravel_index(int(raw[1].argmax()), (32, 48))
    assert y in (27, 28) and x in (3, 4)
    # The default sigma keeps the heat within ~2 cells: nothing left 2 cells (16 px) away.
    assert float(out[0, 11, 35 - 16]) < 1e-3 * float(out[0].max())
    assert float(out[0, 11, 35 - 8]) > 0.05 * float(out[0].max())


def test_constant_map_stays_constant():
    out = gaussian_upsample(torch.full((1, 5, 3), 2.5), (40, 33))
    torch.testing.assert_close(out, torch.full((1, 40, 33), 2.5))
    # Without normalisation the interior is only roughly constant, and on another scale.
    raw = gaussian_upsample(torch.full((1, 5, 3), 2.5), (40, 33), normalize=False)
    assert not torch.allclose(raw, torch.full_like(raw, 2.5))


def test_tiny_sigma_does_not_divide_by_zero():
    out = gaussian_upsample(torch.rand(1, 3, 3), (30, 30), sigma=0.05)
    assert torch.isfinite(out).all()


def test_non_square_and_downsampling_sizes():
    maps = torch.rand(2, 3, 8)
    assert gaussian_upsample(maps, (31, 17)).shape == (2, 31, 17)
    assert gaussian_upsample(maps, (2, 5)).shape == (2, 2, 5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    maps = torch.rand(2, 4, 5)
    cpu = gaussian_upsample(maps, (20, 25))
    gpu = gaussian_upsample(maps.cuda(), (20, 25))
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu)


@pytest.mark.parametrize(
    "maps, size, sigma",
    [
        (torch.rand(4, 4), (8, 8), None),
        (torch.rand(1, 2, 4, 4), (8, 8), None),
        (torch.rand(1, 4, 4), (0, 8), None),
        (torch.rand(1, 4, 4), (8,), None),
        (torch.rand(1, 4, 4), (8, 8), 0.0),
        (torch.rand(1, 4, 4), (8, 8), float("nan")),
    ],
)
def test_bad_inputs_raise_config_error(maps, size, sigma):
    with pytest.raises(ConfigError):
        gaussian_upsample(maps, size, sigma)


def anisotropic_reference(hmap: np.ndarray, h: int, w: int) -> np.ndarray:
    """The default-sigma upsampling computed cell by cell, independently of the separable code: every
    cell adds d * exp(-(dy^2 / 2 sigma_y^2 + dx^2 / 2 sigma_x^2)) with sigma_y = 0.5 * h / u (cell
    height) and sigma_x = 0.5 * w / v (cell width); the sum is divided by that of an all-ones map."""
    u, v = hmap.shape
    sigma_y, sigma_x = 0.5 * h / u, 0.5 * w / v
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    out, weight = np.zeros((h, w)), np.zeros((h, w))
    for i in range(u):
        for j in range(v):
            c1 = (i + 0.5) * h / u - 0.5
            c2 = (j + 0.5) * w / v - 0.5
            g2 = np.exp(-((ys - c1) ** 2) / (2 * sigma_y**2) - ((xs - c2) ** 2) / (2 * sigma_x**2))
            out += hmap[i, j] * g2
            weight += g2
    return out / weight


@pytest.mark.parametrize(
    "cells, size",
    [
        ((4, 8), (64, 64)),  # tall cells: 16 px high, 8 px wide
        ((4, 4), (32, 96)),  # wide cells: 8 px high, 24 px wide
    ],
)
def test_default_sigma_follows_each_axis_cell_spacing(cells, size):
    # Non-square cells are the only case where sigma_y and sigma_x differ: with square cells, an
    # explicit sigma or a constant map, swapping them between the axes goes unnoticed.
    rng = np.random.default_rng(1)
    hmap = rng.random(cells)
    out = gaussian_upsample(torch.from_numpy(hmap)[None], size)[0].numpy()
    np.testing.assert_allclose(out, anisotropic_reference(hmap, *size), rtol=1e-9, atol=1e-12)


def test_hot_cell_spreads_by_its_own_cell_size_along_each_axis():
    # One hot cell of a 4x4 map on a 32x96 image: cells are 8 px high and 24 px wide, so the heat
    # one cell spacing away from the centre is the same fraction (about exp(-2)) along both axes.
    maps = torch.zeros(1, 4, 4, dtype=torch.float64)
    maps[0, 1, 1] = 1.0
    raw = gaussian_upsample(maps, (32, 96), normalize=False)[0].numpy()
    # the centre of cell (1, 1) is (11.5, 35.5): average the 2x2 pixels around each point
    peak = raw[11:13, 35:37].mean()
    down = raw[19:21, 35:37].mean() / peak  # one cell (8 px) lower
    right = raw[11:13, 59:61].mean() / peak  # one cell (24 px) to the right
    assert down == pytest.approx(right, rel=0.05)
    assert down == pytest.approx(math.exp(-2), rel=0.1)
