"""Image-level decision thresholds, chosen on validation data.

Every rule returns a `Threshold`: the value plus the rule and the numbers it was derived from, so that
`metrics.json` records how a decision boundary was made. An image is predicted anomalous when
`score >= threshold.value`.

Thresholds must be fitted on validation scores, never on the test set they are then evaluated on.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from sklearn.metrics import precision_recall_curve

from defectmine.errors import ConfigError
from defectmine.evaluation._validate import labels_and_scores, score_array, threshold_value


@dataclass(frozen=True)
class Threshold:
    """A decision threshold on anomaly scores: predict anomalous when `score >= value`.

    Attributes:
        rule: name of the rule that produced it (a key of `THRESHOLD_RULES`).
        value: the threshold itself.
        params: the rule's parameters and the statistics it used (JSON-ready), e.g.
            `{"k": 3.0, "mean": ..., "std": ...}` for "mean_std".
    """

    rule: str
    value: float
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.rule, str) or not self.rule:
            raise ConfigError(f"Threshold.rule must be a non-empty string, got {self.rule!r}.")
        # Stored as a Python float so that numpy scalars never leak into metrics.json.
        object.__setattr__(self, "value", threshold_value(self.value, "Threshold.value"))
        if not isinstance(self.params, dict):
            raise ConfigError(f"Threshold.params must be a dict, got {type(self.params).__name__}.")

    def __float__(self) -> float:
        return self.value

    def to_dict(self) -> dict:
        """Return a JSON-ready dict `{"rule", "value", "params"}`."""
        return {"rule": self.rule, "value": self.value, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, data: dict) -> Threshold:
        """Rebuild a Threshold from `to_dict()` output (e.g. read back from metrics.json)."""
        if not isinstance(data, dict):
            raise ConfigError(f"Threshold.from_dict expects a dict, got {type(data).__name__}.")
        missing = [k for k in ("rule", "value") if k not in data]
        if missing:
            raise ConfigError(
                f"Threshold dict is missing {missing}; expected keys 'rule', 'value' and optionally "
                f"'params' (as written by Threshold.to_dict()), got {sorted(data)}."
            )
        return cls(rule=data["rule"], value=data["value"], params=dict(data.get("params") or {}))


def max_f1_threshold(labels: Any, scores: Any) -> Threshold:
    """Threshold that maximises F1 on validation labels and scores.

    Candidates are the distinct score values, so images with tied scores always fall on the same
    side. Among equally good candidates the lowest one is kept (the highest recall). The value returned
    is then moved down to the midpoint between that score and the next lower validation score: the
    validation decisions (and F1) are the same, but no validation image sits exactly on the boundary,
    where a float-rounding difference (an exported ONNX graph, another thread count) could flip it.

    Args:
        labels: 0 (normal) / 1 (anomalous) per validation image.
        scores: anomaly score per validation image (higher = more anomalous).

    Returns:
        Threshold with rule "max_f1" and params {"f1", "precision", "recall"} at that threshold.

    Raises:
        ConfigError: if there are no anomalous images (F1 is then undefined).
    """
    y, s = labels_and_scores(labels, scores)
    if not y.any():
        raise ConfigError(
            "max_f1 threshold needs anomalous validation images, but all labels are 0 (normal). "
            'Add labelled defects to the validation split, or use rule "mean_std", which needs '
            "normal images only."
        )
    precision, recall, thresholds = precision_recall_curve(y, s)
    # The last precision/recall pair is sklearn's (1, 0) end point and has no threshold.
    precision, recall = precision[:-1], recall[:-1]
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    best = int(np.argmax(f1))  # thresholds ascend, so the first maximum is the lowest threshold
    return Threshold(
        rule="max_f1",
        value=_midpoint_below(thresholds[best], s),
        params={
            "f1": float(f1[best]),
            "precision": float(precision[best]),
            "recall": float(recall[best]),
        },
    )


def _midpoint_below(score: float, scores: np.ndarray) -> float:
    """The midpoint between `score` and the highest of `scores` below it (`score` itself when none is
    below, or when the two are adjacent floats and no value lies strictly between them)."""
    lower = scores[scores < score]
    if lower.size == 0:
        return float(score)
    below = float(lower.max())
    middle = below + (float(score) - below) / 2
    return middle if below < middle < score else float(score)


def mean_std_threshold(labels: Any, scores: Any, k: float = 3.0) -> Threshold:
    """Threshold at mean + k·std of the scores of normal validation images.

    Only normal images (label 0) are used; anomalous ones are ignored. The standard deviation is the
    sample one (ddof=1); with a single normal image it is 0 and a warning is issued.

    Args:
        labels: 0/1 per validation image, or None when every score comes from a normal image.
        scores: anomaly score per validation image.
        k: number of standard deviations above the mean.

    Returns:
        Threshold with rule "mean_std" and params {"k", "mean", "std", "n_normal"}.

    Raises:
        ConfigError: if there is no normal image or k is not a finite number.
    """
    k = threshold_value(k, "k")
    if labels is None:
        s = score_array(scores, "scores").ravel()
        normal = s
    else:
        y, s = labels_and_scores(labels, scores)
        normal = s[~y]
    if normal.size == 0:
        raise ConfigError(
            "mean_std threshold needs normal validation images (label 0), but there are none. "
            "Add normal images to the validation split."
        )
    if normal.size == 1:
        warnings.warn(
            "mean_std threshold fitted on a single normal image: std is 0, so the threshold is "
            "that image's score. Use more normal validation images.",
            stacklevel=2,
        )
    mean = float(normal.mean())
    std = float(normal.std(ddof=1)) if normal.size > 1 else 0.0
    return Threshold(
        rule="mean_std",
        value=mean + k * std,
        params={"k": k, "mean": mean, "std": std, "n_normal": int(normal.size)},
    )


def fixed_threshold(value: float, labels: Any = None, scores: Any = None) -> Threshold:
    """A threshold given by the user.

    `labels` and `scores` are accepted and ignored, so that every rule in `THRESHOLD_RULES` can be
    called the same way.
    """
    return Threshold(rule="fixed", value=threshold_value(value, "value"), params={})


THRESHOLD_RULES: dict[str, Callable[..., Threshold]] = {
    "max_f1": max_f1_threshold,
    "mean_std": mean_std_threshold,
    "fixed": fixed_threshold,
}


def choose_threshold(rule: str, labels: Any = None, scores: Any = None, **params: Any) -> Threshold:
    """Fit the threshold rule named `rule` (a key of `THRESHOLD_RULES`) on validation data.

    Examples:
        choose_threshold("max_f1", val_labels, val_scores)
        choose_threshold("mean_std", val_labels, val_scores, k=2.5)
        choose_threshold("fixed", value=0.7)

    Raises:
        ConfigError: unknown rule, a parameter the rule does not take, a missing parameter, or
            data the rule cannot use.
    """
    try:
        fn = THRESHOLD_RULES[rule]
    except (KeyError, TypeError):
        raise ConfigError(
            f"Unknown threshold rule {rule!r}; choose one of {sorted(THRESHOLD_RULES)}."
        ) from None
    sig = inspect.signature(fn)
    accepted = [p for p in sig.parameters if p not in ("labels", "scores")]
    try:
        sig.bind(labels=labels, scores=scores, **params)
    except TypeError as exc:
        raise ConfigError(
            f"Threshold rule {rule!r} takes parameters {accepted}, got {sorted(params)} ({exc})."
        ) from None
    return fn(labels=labels, scores=scores, **params)


__all__ = [
    "THRESHOLD_RULES",
    "Threshold",
    "choose_threshold",
    "fixed_threshold",
    "max_f1_threshold",
    "mean_std_threshold",
]
