"""Losses as pure functions, each tested on hand-computed values."""

from __future__ import annotations

import torch


def pseudo_huber(a: torch.Tensor) -> torch.Tensor:
    """H(a) = sqrt(a^2 + 1) - 1, element-wise (deeper-FCDD paper, equation 2)."""
    return torch.sqrt(a * a + 1.0) - 1.0


def fcdd_loss(heat: torch.Tensor, labels: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Deeper-FCDD loss (equation 3) on pseudo-Huber maps `heat` (N, u, v) and labels (N,) in {0, 1}.

    Normal images pay the mean of H over the map; anomalous ones pay -log(1 - exp(-mean H)).
    With no anomalous images in the batch it is the one-class loss.
    """
    mean_heat = heat.flatten(1).mean(dim=1)
    labels = labels.to(mean_heat.dtype)
    # -log(1 - exp(-s)) == -log(-expm1(-s)); the clamp keeps s = 0 from giving inf.
    anomalous_term = -torch.log(-torch.expm1(-mean_heat.clamp_min(eps)))
    return ((1 - labels) * mean_heat + labels * anomalous_term).mean()
