"""Input checks shared by the evaluation functions.

Every check raises ConfigError with a message that says what was passed and how to fix it, so that a
bad array never reaches scikit-learn (whose errors name neither our arguments nor the remedy).
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from defectmine.errors import ConfigError


def to_numpy(x: Any, name: str) -> np.ndarray:
    """Convert an array-like (list, numpy array, torch tensor on any device) to a numpy array."""
    if x is None:
        raise ConfigError(f"{name} is None; pass an array (list, numpy array or torch tensor).")
    # Duck-typed so that evaluation never imports torch; detach/cpu make GPU and grad tensors work too.
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} could not be converted to a numpy array: {exc}") from exc


def check_finite(values: np.ndarray, name: str) -> None:
    """Raise ConfigError naming how many values are NaN or infinite."""
    n_nan = int(np.isnan(values).sum())
    n_inf = int(np.isinf(values).sum())
    if n_nan or n_inf:
        parts = []
        if n_nan:
            parts.append(f"{n_nan} NaN")
        if n_inf:
            parts.append(f"{n_inf} infinite")
        raise ConfigError(
            f"{name} contains {' and '.join(parts)} value(s) out of {values.size}; "
            "metrics need finite scores. Check the detector output (e.g. a diverged training run) "
            "or replace them before evaluating."
        )


def binary_array(x: Any, name: str) -> np.ndarray:
    """Return x as a bool array, refusing anything other than 0/1 (or False/True) values."""
    arr = to_numpy(x, name)
    if arr.dtype == bool:
        return arr
    if not (np.issubdtype(arr.dtype, np.number)):
        raise ConfigError(f"{name} must be numeric 0/1 or bool, got dtype {arr.dtype}.")
    bad = arr[(arr != 0) & (arr != 1)]
    if bad.size:
        shown = np.unique(bad)[:5].tolist()
        raise ConfigError(
            f"{name} must contain only 0 (normal) and 1 (anomalous); found {bad.size} other value(s), "
            f"e.g. {shown}. Binarise them first (e.g. labels > 0)."
        )
    return arr.astype(bool)


def score_array(x: Any, name: str) -> np.ndarray:
    """Return x as a finite floating-point array."""
    arr = to_numpy(x, name)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise ConfigError(f"{name} must be numeric scores, got dtype {arr.dtype}.")
    # Floating inputs keep their dtype: a float32 stack of pixel maps would double in size as float64.
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    check_finite(arr, name)
    return arr


def labels_and_scores(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate image-level labels and scores: both 1-D, same non-zero length, 0/1 labels, finite scores."""
    y = binary_array(labels, "labels")
    s = score_array(scores, "scores")
    for arr, name in ((y, "labels"), (s, "scores")):
        if arr.ndim != 1:
            raise ConfigError(
                f"{name} must be 1-D with one value per image, got shape {arr.shape}; "
                "flatten it (e.g. .ravel()) if it holds one value per image."
            )
    if y.shape[0] != s.shape[0]:
        raise ConfigError(
            f"labels has {y.shape[0]} entries but scores has {s.shape[0]}; "
            "pass one label and one score per image, in the same order."
        )
    if y.shape[0] == 0:
        raise ConfigError("labels and scores are empty; evaluate at least one image.")
    return y, s


def threshold_value(threshold: Any, name: str = "threshold") -> float:
    """Accept a number or anything with __float__ (a Threshold, a 0-d array or tensor)."""
    if isinstance(threshold, (str, bytes, bool)) or threshold is None:
        raise ConfigError(f"{name} must be a number or a Threshold, got {threshold!r}.")
    try:
        value = float(threshold)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be a number or a Threshold, got {threshold!r}.") from exc
    if not np.isfinite(value):
        raise ConfigError(f"{name} must be finite, got {value}.")
    return value


def is_number(v: Any) -> bool:
    """True for real numbers (Python or numpy), False for bools, which are flags rather than metrics."""
    return isinstance(v, (numbers.Real, np.number)) and not isinstance(v, (bool, np.bool_))
