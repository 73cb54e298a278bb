"""Augmentations for siamese pretraining and random masks for masked image modelling.

Pure functions on uint8 image batches (B, C, H, W) with an explicit torch.Generator, like
models/synthetic.py: random draws happen on the CPU generator (so runs repeat under a seed on any
device), the pixel work on the images' device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from defectmine.models.synthetic import random_flips


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return torch.empty(n).uniform_(low, high, generator=generator)


def _to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.round().clamp(0, 255).to(torch.uint8)


def random_resized_crops(
    images: torch.Tensor,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.3, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """A random crop of `scale` of the area and `ratio` aspect per image, resized back to full size.

    One batched affine resampling (bilinear); crops stay inside the image.
    """
    n = len(images)
    area = _uniform(n, *scale, generator)
    aspect = torch.exp(_uniform(n, math.log(ratio[0]), math.log(ratio[1]), generator))
    # Sides as fractions of the image; affine_grid works in [-1, 1] coordinates, so a side fraction
    # is also the scale of the sampling grid and the centre may move by (1 - side) either way.
    side_x = torch.sqrt(area * aspect).clamp(max=1.0)
    side_y = torch.sqrt(area / aspect).clamp(max=1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = side_x, side_y
    theta[:, 0, 2] = (torch.rand(n, generator=generator) * 2 - 1) * (1 - side_x)
    theta[:, 1, 2] = (torch.rand(n, generator=generator) * 2 - 1) * (1 - side_y)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False).to(images.device)
    return _to_uint8(F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False))


def brightness_contrast(
    images: torch.Tensor, generator: torch.Generator, strength: float = 0.4, probability: float = 0.8
) -> torch.Tensor:
    """Scale contrast around each image's mean and brightness by factors in [1 - strength, 1 + strength]."""
    n = len(images)
    apply = (torch.rand(n, generator=generator) < probability).float()
    contrast = 1 + apply * _uniform(n, -strength, strength, generator)
    brightness = 1 + apply * _uniform(n, -strength, strength, generator)
    x = images.float()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    contrast = contrast.view(-1, 1, 1, 1).to(images.device)
    brightness = brightness.view(-1, 1, 1, 1).to(images.device)
    return _to_uint8(((x - mean) * contrast + mean) * brightness)


def gaussian_blur(
    images: torch.Tensor,
    generator: torch.Generator,
    sigma: tuple[float, float] = (0.1, 2.0),
    probability: float = 0.5,
) -> torch.Tensor:
    """Blur each image with probability `probability` by a Gaussian of random sigma (in pixels).

    One grouped, separable convolution for the whole batch: every image gets its own kernel, and
    images left sharp get the identity kernel.
    """
    n, channels, height, width = images.shape
    blur = torch.rand(n, generator=generator) < probability
    sigmas = _uniform(n, *sigma, generator)
    radius = min(math.ceil(3 * sigma[1]), (min(height, width) - 1) // 2)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernels = torch.exp(-(offsets[None] ** 2) / (2 * sigmas[:, None] ** 2))
    kernels[~blur] = (offsets == 0).float()
    kernels = (kernels / kernels.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0).to(images.device)
    x = images.float().reshape(1, n * channels, height, width)
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, kernels[:, None, :, None], groups=n * channels)
    x = F.conv2d(x, kernels[:, None, None, :], groups=n * channels)
    return _to_uint8(x.reshape(n, channels, height, width))


def siamese_view(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One random view of each image: resized crop, flips, brightness/contrast, blur (uint8 in, uint8 out)."""
    view = random_resized_crops(images, generator)
    view = random_flips(view, generator)
    view = brightness_contrast(view, generator)
    return gaussian_blur(view, generator)


def random_masking(n: int, n_tokens: int, ratio: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Hide round(ratio * n_tokens) random tokens per sample (at least 1, at most all but 1).

    Returns (keep, hidden): keep (n, n_visible) the visible token indices in ascending order, hidden
    (n, n_tokens) bool, True where a token is masked. Always on the CPU; move as needed.
    """
    n_hidden = min(max(1, round(ratio * n_tokens)), n_tokens - 1)
    order = torch.rand(n, n_tokens, generator=generator).argsort(dim=1)
    keep = order[:, n_hidden:].sort(dim=1).values
    hidden = torch.ones(n, n_tokens, dtype=torch.bool)
    hidden.scatter_(1, keep, False)
    return keep, hidden


def patch_mask(
    n: int, size: tuple[int, int], patch: int, ratio: float, generator: torch.Generator
) -> torch.Tensor:
    """bool (n, 1, H, W) pixel mask, True inside randomly hidden `patch` x `patch` squares.

    The patch grid covers the image (the last row and column may be cut at the border).
    """
    height, width = size
    grid_h, grid_w = math.ceil(height / patch), math.ceil(width / patch)
    _, hidden = random_masking(n, grid_h * grid_w, ratio, generator)
    pixels = hidden.view(n, 1, grid_h, grid_w).repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)
    return pixels[:, :, :height, :width]
