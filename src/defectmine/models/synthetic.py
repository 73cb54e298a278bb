"""Synthetic anomalies for training without (or with few) labelled defects.

Pure functions on uint8 image batches (B, C, H, W) with an explicit torch.Generator, so that they run
on any device and repeat under a seed. Confetti noise follows FCDD's authors; cut-paste follows
Li et al. (CutPaste, CVPR 2021): a patch of the same image, brightness-jittered, pasted elsewhere.
"""

from __future__ import annotations

import torch

from defectmine.errors import ConfigError

SYNTHETIC_KINDS = ("none", "confetti", "cutpaste", "mixed", "auto")


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """Uniform integer in [low, high] (inclusive)."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def _rand(generator: torch.Generator) -> float:
    return float(torch.rand(1, generator=generator))


def confetti(images: torch.Tensor, generator: torch.Generator, max_blobs: int = 3) -> torch.Tensor:
    """Add 1..max_blobs rectangles of a random constant intensity shift to each image."""
    out = images.clone()
    _, channels, height, width = images.shape
    for image in out:
        for _ in range(_randint(1, max_blobs, generator)):
            bh = _randint(max(2, height // 16), max(3, height // 4), generator)
            bw = _randint(max(2, width // 16), max(3, width // 4), generator)
            y, x = _randint(0, height - bh, generator), _randint(0, width - bw, generator)
            shift = (torch.rand(channels, 1, 1, generator=generator) * 2 - 1) * 160
            patch = image[:, y:y + bh, x:x + bw].float() + shift.to(image.device)
            image[:, y:y + bh, x:x + bw] = patch.clamp(0, 255).to(torch.uint8)
    return out


def cutpaste(images: torch.Tensor, generator: torch.Generator, scar_probability: float = 0.5) -> torch.Tensor:
    """Cut a patch (a block, or a thin 'scar') from each image and paste it elsewhere, jittered."""
    out = images.clone()
    _, _, height, width = images.shape
    for index, image in enumerate(out):
        if _rand(generator) < scar_probability:  # long thin patch: crack- and scratch-like
            long_side = _randint(max(4, min(height, width) // 6), max(5, min(height, width) // 2), generator)
            short_side = _randint(1, max(2, min(height, width) // 24), generator)
            ph, pw = (long_side, short_side) if _rand(generator) < 0.5 else (short_side, long_side)
        else:
            area = _rand(generator) * 0.13 + 0.02
            aspect = 0.3 + _rand(generator) * 3.0
            ph = max(2, min(height - 1, int(round((area * height * width * aspect) ** 0.5))))
            pw = max(2, min(width - 1, int(round((area * height * width / aspect) ** 0.5))))
        sy, sx = _randint(0, height - ph, generator), _randint(0, width - pw, generator)
        ty, tx = _randint(0, height - ph, generator), _randint(0, width - pw, generator)
        patch = images[index, :, sy:sy + ph, sx:sx + pw].float()
        gain = 0.6 + 0.8 * _rand(generator)
        offset = (_rand(generator) * 2 - 1) * 40
        image[:, ty:ty + ph, tx:tx + pw] = (patch * gain + offset).clamp(0, 255).to(torch.uint8)
    return out


def synthesize(images: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Turn normal images into synthetic anomalies of the given kind ('confetti', 'cutpaste', 'mixed')."""
    if kind == "confetti":
        return confetti(images, generator)
    if kind == "cutpaste":
        return cutpaste(images, generator)
    if kind == "mixed":
        pick_confetti = torch.rand(len(images), generator=generator) < 0.5
        out = cutpaste(images, generator)
        if pick_confetti.any():
            out[pick_confetti.to(out.device)] = confetti(images[pick_confetti.to(images.device)], generator)
        return out
    raise ConfigError(f"synthetic={kind!r}: use one of {', '.join(SYNTHETIC_KINDS)}.")


def resolve_synthetic(kind: str, n_labelled_anomalies: int) -> str:
    """'auto' means synthetic anomalies only when there are no labelled ones: cut-paste, which beat
    one-class training and confetti noise on both Magnetic Tile and ELPV at K = 0 (BENCHMARKS.md,
    "FCDD without labelled defects")."""
    if kind not in SYNTHETIC_KINDS:
        raise ConfigError(f"synthetic={kind!r}: use one of {', '.join(SYNTHETIC_KINDS)}.")
    if kind == "auto":
        return "cutpaste" if n_labelled_anomalies == 0 else "none"
    return kind


def random_flips(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image horizontally and/or vertically with probability 1/2 (surface textures)."""
    flips = torch.rand(len(images), 2, generator=generator) < 0.5
    out = images.clone()
    h = flips[:, 0].to(images.device)
    v = flips[:, 1].to(images.device)
    out[h] = out[h].flip(-1)
    out[v] = out[v].flip(-2)
    return out
