"""Prompted segmentation through any backend: batches, MC-dropout passes, then the ensemble.

A backend has one method and one attribute:

    maps(images_uint8, foreground, background, *, stochastic=False) -> (fg_maps, bg_maps)
        images_uint8: (N, C, H, W) uint8 tensor; foreground / background: the backend's queries
        (text prompts for CLIPSeg, `VisualQuery` example sets for the visual backend); returns two
        float tensors (queries, N, H, W) in [0, 1]. stochastic=True runs with dropout on.
    has_dropout: whether stochastic passes differ (MC dropout is refused otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from defectmine.errors import ConfigError
from defectmine.progress import track
from defectmine.prompt.ensemble import PromptMaps, check_kind, combine


class PromptBackend(Protocol):
    has_dropout: bool

    def maps(self, images_uint8: torch.Tensor, foreground: Sequence, background: Sequence, *,
             stochastic: bool = False) -> tuple[torch.Tensor, torch.Tensor]: ...


def _check_images(images_uint8) -> torch.Tensor:
    images = torch.as_tensor(images_uint8)
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ConfigError(f"prompted segmentation takes (N, C, H, W) uint8 images, got {images.dtype} {tuple(images.shape)}.")
    return images


def prompt_segment(
    backend: PromptBackend,
    images_uint8,
    foreground: Sequence,
    background: Sequence,
    *,
    mc_samples: int = 0,
    uncertainty: str = "entropy",
    batch_size: int = 16,
    seed: int = 0,
    quiet: bool = True,
) -> PromptMaps:
    """Segment images with foreground and background queries; see `defectmine.prompt.ensemble`.

    mc_samples: stochastic passes for MC-dropout uncertainty (0: none; needs a backend with dropout).
    seed: seeds the dropout masks, so that two calls give the same uncertainty.
    """
    images = _check_images(images_uint8)
    if not foreground or not background:
        raise ConfigError("prompted segmentation needs at least one foreground and one background query.")
    if isinstance(mc_samples, bool) or not isinstance(mc_samples, int) or mc_samples < 0 or mc_samples == 1:
        raise ConfigError(f"mc_samples={mc_samples!r}: use 0 (no MC dropout) or a whole number >= 2.")
    if mc_samples and not backend.has_dropout:
        raise ConfigError("mc_samples > 0 but the model has no dropout, so every pass would be the same. "
                          "Fix: use mc_samples=0 (entropy or spread uncertainty), or a model with dropout.")
    check_kind(uncertainty)
    if uncertainty == "mc" and not mc_samples:
        raise ConfigError("uncertainty='mc' needs mc_samples >= 2.")
    torch.manual_seed(seed)
    parts = []
    starts = range(0, len(images), batch_size)
    for start in track(starts, description="prompt segment", total=len(starts), quiet=quiet):
        batch = images[start:start + batch_size]
        with torch.no_grad():
            fg, bg = backend.maps(batch, foreground, background)
            passes = [_probability(*backend.maps(batch, foreground, background, stochastic=True))
                      for _ in range(mc_samples)]
        parts.append(combine(fg, bg, np.stack(passes) if passes else None, kind=uncertainty))
    return _concatenate(parts)


def _probability(fg: torch.Tensor, bg: torch.Tensor) -> np.ndarray:
    from defectmine.prompt.ensemble import probability

    return probability(fg, bg).numpy()


def _concatenate(parts: list[PromptMaps]) -> PromptMaps:
    fields = ("foreground", "background", "probability", "mask", "entropy", "spread", "mc")
    joined = {name: np.concatenate([getattr(p, name) for p in parts]) for name in fields}
    return PromptMaps(**joined, kind=parts[0].kind)
