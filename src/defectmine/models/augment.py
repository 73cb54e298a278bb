"""Training-time augmentation of image batches for the gradient-trained detectors (`augment` option).

Pure, batched functions on uint8 batches (B, C, H, W) with an explicit torch.Generator (drawn on the
CPU, applied on the batch's device), so that a fit repeats under its seed. `augment_images` applies
the parts an `augment` value names, always in the order of `AUGMENTATIONS`; each part draws from the
generator only when it is on, so `augment="flips"` (and `True`) draws exactly what the flips alone
always drew. The output stays uint8: `normalise` follows.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from defectmine.errors import ConfigError
from defectmine.models.synthetic import random_flips

#: The parts an `augment` value may join with "+", in the order they are applied.
AUGMENTATIONS = ("flips", "rot90", "affine", "color", "cutout")


def augment_parts(augment: bool | str) -> tuple[str, ...]:
    """The parts `augment` names, in application order: True = ("flips",), False / "none" = (),
    "all" = every part, else a "+"-joined subset such as "flips+rot90". ConfigError names an unknown part."""
    if isinstance(augment, bool):
        return ("flips",) if augment else ()
    if not isinstance(augment, str):
        raise ConfigError(f"augment={augment!r} must be true, false or a text such as 'flips+rot90'.")
    if augment == "none":
        return ()
    if augment == "all":
        return AUGMENTATIONS
    parts = [part.strip() for part in augment.split("+")]
    unknown = [part for part in parts if part not in AUGMENTATIONS]
    if unknown:
        raise ConfigError(
            f"augment={augment!r}: unknown part(s) {', '.join(repr(p) for p in unknown)}. Fix: use 'none', 'all' "
            f"or a '+'-joined subset of {', '.join(AUGMENTATIONS)} (e.g. 'flips+rot90')."
        )
    return tuple(name for name in AUGMENTATIONS if name in parts)


def augment_images(images: torch.Tensor, parts: tuple[str, ...], generator: torch.Generator) -> torch.Tensor:
    """`images` (uint8, B x C x H x W) with the augmentations `parts` applied per image."""
    for name in parts:
        images = _FUNCTIONS[name](images, generator)
    return images


def random_rot90(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Turn each image by a random multiple of 90 degrees. Non-square batches are returned unchanged
    (a quarter turn would change their shape); nothing is drawn for them."""
    if images.shape[-1] != images.shape[-2]:
        return images
    turns = torch.randint(0, 4, (len(images),), generator=generator).to(images.device)
    out = images.clone()
    for k in (1, 2, 3):
        rows = turns == k
        if rows.any():
            out[rows] = torch.rot90(images[rows], k, dims=(-2, -1))
    return out


def random_affine(images: torch.Tensor, generator: torch.Generator, *, degrees: float = 10.0,
                  scale: tuple[float, float] = (0.9, 1.1), shift: float = 0.05) -> torch.Tensor:
    """A small random affine map per image: rotation within +-`degrees`, zoom within `scale`, shift
    within +-`shift` of the side; bilinear, with reflection padding so no black borders appear."""
    n = len(images)
    draws = torch.rand(n, 4, generator=generator)
    angle = (draws[:, 0] * 2 - 1) * math.radians(degrees)
    zoom = scale[0] + draws[:, 1] * (scale[1] - scale[0])
    # affine_grid's coordinates span [-1, 1], i.e. 2 units per side
    tx, ty = (draws[:, 2] * 2 - 1) * shift * 2, (draws[:, 3] * 2 - 1) * shift * 2
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom  # the grid maps output to input points
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta.to(images.device), list(images.shape), align_corners=False)
    warped = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return warped.round().clamp(0, 255).to(torch.uint8)


def random_color(images: torch.Tensor, generator: torch.Generator, *, brightness: float = 0.1,
                 contrast: tuple[float, float] = (0.9, 1.1)) -> torch.Tensor:
    """Per image: contrast scaled within `contrast` around the image's mean, then brightness shifted
    within +-`brightness` of the full range; clamped to 0..255."""
    draws = torch.rand(len(images), 2, generator=generator).to(images.device)
    gain = (contrast[0] + draws[:, 0] * (contrast[1] - contrast[0])).view(-1, 1, 1, 1)
    offset = ((draws[:, 1] * 2 - 1) * brightness * 255).view(-1, 1, 1, 1)
    pixels = images.float()
    mean = pixels.mean(dim=(1, 2, 3), keepdim=True)
    return ((pixels - mean) * gain + mean + offset).round().clamp(0, 255).to(torch.uint8)


def random_cutout(images: torch.Tensor, generator: torch.Generator, *, probability: float = 0.5) -> torch.Tensor:
    """With `probability`, one square of side 1/8 of the shorter image side set to the image's mean
    (per channel). Applied to every training image, normal or defective alike: it may hide part (or,
    for a small defect, all) of a defect while the label stays "anomalous" - a known cost of cutout."""
    n, _, height, width = images.shape
    side = max(1, min(height, width) // 8)
    draws = torch.rand(n, 3, generator=generator)
    on = (draws[:, 0] < probability).to(images.device)
    top = (draws[:, 1] * (height - side + 1)).long().clamp(max=height - side).to(images.device)
    left = (draws[:, 2] * (width - side + 1)).long().clamp(max=width - side).to(images.device)
    rows = torch.arange(height, device=images.device).view(1, -1, 1)
    cols = torch.arange(width, device=images.device).view(1, 1, -1)
    inside = ((rows >= top.view(-1, 1, 1)) & (rows < (top + side).view(-1, 1, 1))
              & (cols >= left.view(-1, 1, 1)) & (cols < (left + side).view(-1, 1, 1)) & on.view(-1, 1, 1))
    mean = images.float().mean(dim=(2, 3), keepdim=True).round().to(torch.uint8)
    return torch.where(inside.unsqueeze(1), mean.expand_as(images), images)


_FUNCTIONS = {"flips": random_flips, "rot90": random_rot90, "affine": random_affine, "color": random_color,
              "cutout": random_cutout}
