"""Seed ensembles: the mean of several members' scores, each member's scores first standardised.

Members of one detector differ only in their training seed, but their raw scores live on different
scales (an FCDD map mean of one member may be ten times another's), so a plain mean would let one
member decide. Each member's scores are standardised by the mean and standard deviation of its own
scores on a reference set (val, chosen because model selection already scores it); the ensemble score
is the mean of the standardised scores. Maps get the same affine map as their member's image scores,
so an FCDD ensemble's image score is still the mean of its map.

`TrainedDetector` fits and scores ensembles with these functions (`-p ensemble=3`); `benchmarks/levers.py`
computes its "ensemble of seeds" column with the same ones from the seeds' kept scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from defectmine.errors import ConfigError


def check_ensemble(size, owner: str) -> None:
    """ConfigError unless `size` (members of a seed ensemble) is a whole number >= 1."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"{owner}: ensemble={size!r} must be a whole number >= 1 (members, seeds seed, seed+1, ...; "
                          "1: a single network). Fix: e.g. -p ensemble=3.")


def standardiser(reference_scores: np.ndarray) -> tuple[float, float]:
    """(centre, scale) that standardise a member's scores: the mean and standard deviation of its scores on
    the reference set (scale 1 when they are all equal, so a constant member adds nothing but no NaN)."""
    scores = np.asarray(reference_scores, dtype=np.float64)
    if scores.size == 0 or not np.isfinite(scores).all():
        raise ValueError("ensemble: a member's reference scores are empty or not finite.")
    scale = float(scores.std())
    return float(scores.mean()), scale if scale > 0 else 1.0


def standardised_mean(member_values: Sequence, standardisers: Sequence[tuple[float, float]]):
    """Mean over members of (value - centre) / scale: tensors or NumPy arrays, one per member."""
    parts = [(v - c) / k for v, (c, k) in zip(member_values, standardisers, strict=True)]
    return sum(parts[1:], parts[0]) / len(parts)


def combine(member_outputs: Sequence[tuple[torch.Tensor, torch.Tensor]],
            standardisers: Sequence[tuple[float, float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(image scores, maps) of an ensemble from its members' (image scores, maps)."""
    images, maps = zip(*member_outputs, strict=True)
    return standardised_mean(images, standardisers), standardised_mean(maps, standardisers)


def seed_ensemble_auroc(labels: np.ndarray, member_scores: Sequence[np.ndarray],
                        reference_scores: Sequence[np.ndarray]) -> float:
    """AUROC of the ensemble of members whose scores on a set (`member_scores`, same order as `labels`)
    and on the reference set are kept: what `ensemble=n` would score, without fitting again."""
    from sklearn.metrics import roc_auc_score

    standardisers = [standardiser(r) for r in reference_scores]
    scores = [np.asarray(s, dtype=np.float64) for s in member_scores]
    return float(roc_auc_score(labels, standardised_mean(scores, standardisers)))
