"""Query ensembles and their uncertainty: the backend-independent half of prompted segmentation.

A backend turns each query (a text prompt, or a few example crops of one concept) into a map of how
much every pixel looks like that query, in [0, 1]. Here the maps are combined (the paper's recipe):
foreground = mean of the foreground queries' maps, background = mean of the background queries'
maps, mask = foreground > background. Uncertainty per pixel comes three ways, all in [0, 1]:

- entropy: binary entropy (in bits) of p = foreground / (foreground + background);
- spread: how much the queries disagree, the mean of the per-side standard deviations, times 2
  (so that two maps at 0 and 1 give 1);
- mc: the standard deviation of p over stochastic passes (MC dropout), times 2; 0 when no passes ran.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from defectmine.errors import ConfigError

UNCERTAINTIES = ("entropy", "spread", "mc")
_EPS = 1e-6


@dataclass
class PromptMaps:
    """The result of one prompted segmentation of N images (numpy float32 (N, H, W) unless said).

    foreground, background: the ensembles' mean maps; probability: foreground / (foreground +
    background); mask: bool, foreground > background; entropy, spread, mc: uncertainties (see the
    module docstring); uncertainty: the one chosen as `kind`.
    """

    foreground: np.ndarray
    background: np.ndarray
    probability: np.ndarray
    mask: np.ndarray
    entropy: np.ndarray
    spread: np.ndarray
    mc: np.ndarray
    kind: str = "entropy"

    @property
    def uncertainty(self) -> np.ndarray:
        return {"entropy": self.entropy, "spread": self.spread, "mc": self.mc}[self.kind]


def check_kind(kind: str) -> str:
    if kind not in UNCERTAINTIES:
        raise ConfigError(f"uncertainty={kind!r} is unknown. Fix: use one of {', '.join(UNCERTAINTIES)}.")
    return kind


def _stack(maps, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(maps, dtype=np.float32) if not torch.is_tensor(maps) else maps).float()
    if t.ndim != 4 or t.shape[0] < 1:
        raise ConfigError(f"{name}: expected (queries, N, H, W) maps with at least one query, got {tuple(t.shape)}.")
    if not torch.isfinite(t).all() or t.min() < 0 or t.max() > 1:
        raise ConfigError(f"{name}: query maps must be finite and in [0, 1] (per-query probabilities).")
    return t


def probability(foreground_maps, background_maps) -> torch.Tensor:
    """p = mean foreground / (mean foreground + mean background), (N, H, W)."""
    fg, bg = _stack(foreground_maps, "foreground").mean(0), _stack(background_maps, "background").mean(0)
    return fg / (fg + bg + _EPS)


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy of a Bernoulli(p) in bits: 0 at p = 0 or 1, 1 at p = 0.5."""
    p = p.clamp(_EPS, 1 - _EPS)
    return -(p * torch.log2(p) + (1 - p) * torch.log2(1 - p))


def _std(maps: torch.Tensor) -> torch.Tensor:
    return maps.std(0, unbiased=False) if maps.shape[0] > 1 else torch.zeros_like(maps[0])


def combine(foreground_maps, background_maps, mc_probabilities=None, *, kind: str = "entropy") -> PromptMaps:
    """Ensemble per-query maps (queries, N, H, W) of each side into masks and uncertainty.

    mc_probabilities: optional (passes, N, H, W) probabilities from stochastic passes (MC dropout);
    their spread is the "mc" uncertainty.
    """
    kind = check_kind(kind)
    fg_maps, bg_maps = _stack(foreground_maps, "foreground"), _stack(background_maps, "background")
    if fg_maps.shape[1:] != bg_maps.shape[1:]:
        raise ConfigError(f"foreground maps {tuple(fg_maps.shape[1:])} and background maps "
                          f"{tuple(bg_maps.shape[1:])} must cover the same images at the same size.")
    fg, bg = fg_maps.mean(0), bg_maps.mean(0)
    p = fg / (fg + bg + _EPS)
    spread = (_std(fg_maps) + _std(bg_maps))  # each std <= 0.5, so the sum (= 2 x mean) is <= 1
    if mc_probabilities is not None and len(mc_probabilities) > 1:
        mc = 2 * torch.as_tensor(np.asarray(mc_probabilities, dtype=np.float32)).std(0, unbiased=False)
    else:
        mc = torch.zeros_like(p)
    if kind == "mc" and mc_probabilities is None:
        raise ConfigError("uncertainty='mc' needs stochastic passes. Fix: set mc_samples >= 2, or use entropy/spread.")
    as_np = lambda t: t.numpy().astype(np.float32)  # noqa: E731
    return PromptMaps(
        foreground=as_np(fg), background=as_np(bg), probability=as_np(p), mask=(fg > bg).numpy(),
        entropy=as_np(binary_entropy(p)), spread=as_np(spread.clamp(0, 1)), mc=as_np(mc.clamp(0, 1)), kind=kind,
    )
