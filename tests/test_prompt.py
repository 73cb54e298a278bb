"""Prompted segmentation: the ensemble's arithmetic, the visual backend, CLIPSeg from a tiny random model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from defectmine.backbones import build_encoder
from defectmine.data.images import ImageSpec
from defectmine.errors import ConfigError
from defectmine.prompt import VisualPromptBackend, VisualQuery, binary_entropy, combine, prompt_segment

SPEC = ImageSpec(size=(32, 32), channels=1)


def test_combine_averages_queries_and_compares_sides():
    fg = np.stack([np.full((1, 2, 2), 0.9), np.full((1, 2, 2), 0.5)]).astype(np.float32)  # mean 0.7
    bg = np.full((1, 1, 2, 2), 0.3, dtype=np.float32)
    fg[:, 0, 0, 0] = 0.1  # pixel (0, 0): foreground mean 0.1 < 0.3
    result = combine(fg, bg)
    assert result.foreground[0, 1, 1] == pytest.approx(0.7)
    assert result.probability[0, 1, 1] == pytest.approx(0.7, abs=1e-4)
    assert result.mask.tolist() == [[[False, True], [True, True]]]
    # spread: std of {0.9, 0.5} = 0.2 on the foreground side, 0 on the single background query
    assert result.spread[0, 1, 1] == pytest.approx(0.2)
    assert result.spread[0, 0, 0] == pytest.approx(0.0)
    assert result.entropy[0, 1, 1] == pytest.approx(float(binary_entropy(torch.tensor(0.7))), abs=1e-4)
    assert not result.mc.any()


def test_entropy_is_one_at_even_odds_and_zero_when_sure():
    assert binary_entropy(torch.tensor([0.5]))[0] == pytest.approx(1.0)
    assert binary_entropy(torch.tensor([1.0]))[0] == pytest.approx(0.0, abs=1e-4)


def test_mc_uncertainty_from_passes():
    fg, bg = np.full((1, 1, 1, 2), 0.5, np.float32), np.full((1, 1, 1, 2), 0.5, np.float32)
    passes = np.array([[[[0.2, 0.5]]], [[[0.8, 0.5]]]], dtype=np.float32)
    result = combine(fg, bg, passes, kind="mc")
    assert result.uncertainty[0, 0].tolist() == pytest.approx([0.6, 0.0])


@pytest.mark.parametrize("maps, kind", [(np.full((1, 1, 2, 2), 1.5), "entropy"), (np.zeros((1, 2, 2)), "entropy"),
                                        (np.full((1, 1, 2, 2), 0.5), "variance")])
def test_combine_rejects_bad_maps_and_kinds(maps, kind):
    with pytest.raises(ConfigError):
        combine(maps.astype(np.float32), np.full((1, 1, 2, 2), 0.5, np.float32), kind=kind)


def _bright_square_images(n: int = 4) -> tuple[torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(40, 80, size=(n, 1, 32, 32)).astype(np.uint8)
    masks = np.zeros((n, 32, 32), dtype=bool)
    for i in range(n):
        y, x = 4 + 4 * i, 20 - 4 * i
        images[i, :, y:y + 8, x:x + 8] = 230
        masks[i, y:y + 8, x:x + 8] = True
    return torch.from_numpy(images), masks


def _visual_backend(dropout: float = 0.0) -> VisualPromptBackend:
    torch.manual_seed(0)
    return VisualPromptBackend(build_encoder("cnn", 1, width=8), SPEC, dropout=dropout)


def _queries():
    bright = VisualQuery("bright", [np.full((1, 10, 10), 230, np.uint8)])
    rng = np.random.default_rng(1)
    dark = VisualQuery("tile", [rng.integers(40, 80, size=(1, 24, 24)).astype(np.uint8)])
    return [bright], [dark]


@pytest.mark.parametrize("match", ["prototype", "nearest"])
def test_visual_prompts_find_the_prompted_concept(match):
    images, masks = _bright_square_images()
    fg, bg = _queries()
    backend = _visual_backend()
    backend.match = match
    result = prompt_segment(backend, images, fg, bg, uncertainty="spread")
    assert result.mask.shape == masks.shape
    inside, outside = result.probability[masks].mean(), result.probability[~masks].mean()
    assert inside > outside + 0.2, (inside, outside)
    iou = (result.mask & masks).sum() / (result.mask | masks).sum()
    assert iou > 0.4


def test_visual_mc_dropout_is_seeded_and_needs_dropout():
    images, _ = _bright_square_images(2)
    fg, bg = _queries()
    a = prompt_segment(_visual_backend(0.2), images, fg, bg, mc_samples=3, uncertainty="mc", seed=1)
    b = prompt_segment(_visual_backend(0.2), images, fg, bg, mc_samples=3, uncertainty="mc", seed=1)
    assert a.mc.max() > 0 and np.array_equal(a.mc, b.mc)
    with pytest.raises(ConfigError, match="no dropout"):
        prompt_segment(_visual_backend(0.0), images, fg, bg, mc_samples=3)


def test_bad_queries_and_images_are_refused():
    fg, bg = _queries()
    with pytest.raises(ConfigError, match="unknown"):
        VisualPromptBackend(build_encoder("cnn", 1, width=8), SPEC, match="closest")
    with pytest.raises(ConfigError, match="no example"):
        VisualQuery("empty", [])
    with pytest.raises(ConfigError, match="at least one foreground"):
        prompt_segment(_visual_backend(), _bright_square_images(1)[0], fg, [])
    with pytest.raises(ConfigError, match="uint8"):
        prompt_segment(_visual_backend(), torch.zeros(1, 1, 32, 32), fg, bg)
    with pytest.raises(ConfigError, match="mc_samples"):
        prompt_segment(_visual_backend(0.2), _bright_square_images(1)[0], fg, bg, mc_samples=1)
