import pytest
import torch

from defectmine.errors import ConfigError
from defectmine.models.synthetic import random_flips, resolve_synthetic, synthesize


def _images():
    return torch.full((6, 1, 32, 32), 128, dtype=torch.uint8)


@pytest.mark.parametrize("kind", ["confetti", "cutpaste", "mixed"])
def test_synthetic_changes_every_image_and_keeps_shape(kind):
    images = _images()
    images[:, :, ::4] = 40  # texture, so that cut-paste moves something visible
    out = synthesize(images, kind, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    changed = (out != images).flatten(1).any(dim=1)
    assert changed.float().mean() >= 0.8
    assert torch.equal(images[:, :, ::4], torch.full_like(images[:, :, ::4], 40))  # input untouched


def test_synthetic_repeats_under_seed():
    a = synthesize(_images(), "mixed", torch.Generator().manual_seed(3))
    b = synthesize(_images(), "mixed", torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_resolve_synthetic():
    assert resolve_synthetic("auto", 0) == "cutpaste"
    assert resolve_synthetic("auto", 5) == "none"
    assert resolve_synthetic("cutpaste", 5) == "cutpaste"
    with pytest.raises(ConfigError, match="synthetic='bogus'"):
        resolve_synthetic("bogus", 0)


def test_random_flips_only_permute_pixels():
    images = torch.arange(2 * 16, dtype=torch.uint8).reshape(2, 1, 4, 4)
    out = random_flips(images, torch.Generator().manual_seed(1))
    assert torch.equal(out.flatten(1).sort().values, images.flatten(1).sort().values)
