"""Display ranges for anomaly heatmaps.

The deeper-FCDD paper (section 2.2) shows every heatmap of a set on one shared range
``[min, q * max]`` with ``q = 0.25``: anomaly scores are long-tailed, and the full range would wash
most defects out to the cold end of the colormap. One range for the whole set keeps heatmaps of
different images comparable.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable

import numpy as np

from defectmine.errors import ConfigError


def _tensor_type():
    """torch.Tensor when torch is loaded, else () (nothing is a tensor then): without importing torch, so
    that overlays of an exported model's maps need no torch."""
    torch = sys.modules.get("torch")
    return torch.Tensor if torch is not None else ()


def as_numpy(x) -> np.ndarray:
    """A numpy view or copy of a numpy array, torch tensor (any device) or nested list."""
    if isinstance(x, _tensor_type()):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _finite_min_max(m) -> tuple[float, float] | None:
    if isinstance(m, _tensor_type()):
        # Reduce on the tensor's device: full-resolution maps on a GPU can be hundreds of MB.
        t = m.detach()
        t = t[t.isfinite()]
        if t.numel() == 0:
            return None
        return float(t.min()), float(t.max())
    a = np.asarray(m, dtype=np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return None
    return float(a.min()), float(a.max())


def _eps(lo: float) -> float:
    return 1e-6 * max(1.0, abs(lo))


def display_range(maps, q: float = 0.25) -> tuple[float, float]:
    """One display range ``(min, q * max)`` shared by a whole set of heatmaps.

    Args:
        maps: a tensor or array of any shape (e.g. ``(N, H, W)``), or a list of them (maps of
            different sizes are fine). NaN and infinite values are ignored.
        q: fraction of the maximum used as the top of the range; the paper's 0.25 by default.
            Must lie in ``(0, 1]``; 1 gives the full ``[min, max]`` range.

    Returns:
        ``(lo, hi)`` with ``hi > lo`` guaranteed: when ``q * max <= min`` (a constant map, or
        negative scores) ``hi`` becomes ``lo + 1e-6 * max(1, |lo|)``.

    Raises:
        ConfigError: ``q`` outside ``(0, 1]``, or no finite value in ``maps``.
    """
    q = float(q)
    if not (0.0 < q <= 1.0):
        raise ConfigError(
            f"display_range: q must be in (0, 1], got {q}; the paper uses 0.25 (top of the range "
            "at a quarter of the maximum score), 1.0 shows the full range."
        )
    parts: Iterable = maps if isinstance(maps, (list, tuple)) else [maps]
    lo, top = math.inf, -math.inf
    for m in parts:
        mm = _finite_min_max(m)
        if mm is not None:
            lo, top = min(lo, mm[0]), max(top, mm[1])
    if not math.isfinite(lo):
        raise ConfigError(
            "display_range: the maps hold no finite value (empty, or all NaN/inf); "
            "check the detector output before drawing heatmaps."
        )
    hi = q * top
    if hi <= lo:
        hi = lo + _eps(lo)
    return lo, hi


def to_unit(map, lo: float, hi: float) -> np.ndarray:
    """Map values to ``[0, 1]`` on the display range ``[lo, hi]``, clipping outside it.

    Accepts a numpy array or torch tensor of any shape; returns float32 numpy of the same shape.
    NaN becomes 0 (the cold end) so that a broken pixel never looks like a defect.

    Raises:
        ConfigError: ``hi <= lo`` or a non-finite bound; get the range from ``display_range``.
    """
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise ConfigError(
            f"to_unit: need finite lo < hi, got lo={lo}, hi={hi}; use display_range(maps) to get one."
        )
    a = as_numpy(map).astype(np.float64, copy=False)
    unit = np.clip((a - lo) / (hi - lo), 0.0, 1.0)
    return np.nan_to_num(unit, nan=0.0).astype(np.float32)
