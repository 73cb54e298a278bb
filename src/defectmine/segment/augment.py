"""Geometric augmentation applied jointly to images and their class masks (pure, seeded)."""

from __future__ import annotations

import torch


def flips_and_rotations(
    images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image and its mask turned by the same random multiple of 90 degrees, then mirrored with
    probability 1/2: one of the 8 symmetries of the square, uniformly (surface textures have no up).

    images: (B, C, H, W); masks: (B, H, W). Non-square images get 0 or 180 degree turns only, so the
    batch keeps its shape. Returns new tensors; the inputs are not changed.
    """
    square = images.shape[-1] == images.shape[-2]
    turns = torch.randint(0, 4, (len(images),), generator=generator)
    if not square:
        turns = (turns // 2) * 2
    mirror = torch.rand(len(images), generator=generator) < 0.5
    out_images, out_masks = images.clone(), masks.clone()
    for k in range(4):
        for flip in (False, True):
            chosen = ((turns == k) & (mirror == flip)).nonzero().flatten()
            if not len(chosen) or (k == 0 and not flip):
                continue
            index = chosen.to(images.device)
            image, mask = images[index].rot90(k, dims=(-2, -1)), masks[index].rot90(k, dims=(-2, -1))
            if flip:
                image, mask = image.flip(-1), mask.flip(-1)
            out_images[index], out_masks[index] = image, mask
    return out_images, out_masks
