"""Aggregate metric dicts over runs (seeds, folds) into mean ± std."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from defectmine.errors import ConfigError
from defectmine.evaluation._validate import is_number


def _is_missing(v: Any) -> bool:
    return v is None or (is_number(v) and math.isnan(float(v)))


def _stats(values: list) -> dict:
    present = np.array([float(v) for v in values if not _is_missing(v)], dtype=np.float64)
    n = int(present.size)
    stats: dict[str, Any] = {"mean": None, "std": None, "n": n, "n_missing": len(values) - n}
    if n:
        stats["mean"] = float(present.mean())
        stats["std"] = float(present.std(ddof=1)) if n > 1 else 0.0
    return stats


def _aggregate(dicts: list[Mapping]) -> dict:
    out: dict[str, Any] = {}
    for key in dicts[0]:
        if not all(key in d for d in dicts[1:]):
            continue
        values = [d[key] for d in dicts]
        if all(isinstance(v, Mapping) for v in values):
            nested = _aggregate(values)
            if nested:
                out[key] = nested
        elif all(is_number(v) or v is None for v in values):
            out[key] = _stats(values)
    return out


def aggregate(runs: list[dict]) -> dict:
    """Mean and standard deviation of every numeric metric over several runs.

    A key is aggregated when it is present in every run and holds a number or None in every run;
    nested dicts (e.g. "confusion_matrix") are aggregated key by key and keep their nesting. Other
    values (strings, lists, bools such as "pixel_subsampled") and keys missing from some run are left
    out.

    Each aggregated key becomes {"mean", "std", "n", "n_missing"}: None and NaN values (a metric that
    was undefined in that run, e.g. AUROC on one class) are skipped and counted in n_missing; n is the
    number of values used. std is the sample standard deviation (ddof=1), the usual spread reported
    across seeds; with a single value it is 0.0. With no value at all, mean and std are None.

    Example:
        aggregate([{"auroc": 0.90}, {"auroc": 0.92}])
        -> {"auroc": {"mean": 0.91, "std": 0.01414..., "n": 2, "n_missing": 0}}

    Raises:
        ConfigError: runs is empty or contains something other than dicts.
    """
    if isinstance(runs, Mapping) or not isinstance(runs, (list, tuple)):
        raise ConfigError(
            f"aggregate expects a list of metric dicts (one per run), got {type(runs).__name__}."
        )
    if not runs:
        raise ConfigError("aggregate got an empty list of runs; pass at least one metric dict.")
    bad = [i for i, r in enumerate(runs) if not isinstance(r, Mapping)]
    if bad:
        raise ConfigError(
            f"aggregate expects every run to be a dict of metrics; runs at positions {bad} are not "
            f"(first is {type(runs[bad[0]]).__name__})."
        )
    return _aggregate(list(runs))


def format_mean_std(stats: Mapping, digits: int = 3) -> str:
    """Format one entry of `aggregate(...)` as "0.912 ± 0.004".

    A single run is shown without "± ..." (its std of 0 says nothing about spread) and a metric with
    no value as "n/a".
    """
    if not isinstance(stats, Mapping) or "mean" not in stats:
        raise ConfigError(
            "format_mean_std expects one aggregated entry such as {'mean': 0.9, 'std': 0.01, 'n': 3}"
            f", got {stats!r}."
        )
    mean = stats["mean"]
    if mean is None:
        return "n/a"
    text = f"{mean:.{digits}f}"
    std = stats.get("std")
    if std is not None and stats.get("n", 2) > 1:
        text += f" ± {std:.{digits}f}"
    return text


__all__ = ["aggregate", "format_mean_std"]
