"""Validation data only: the check that thresholds and model selection never see another split, and
the model-selection metrics that detectors call during `fit`.

Records carry their split (`Record.split`); a dataset whose records are not all "val" (test images,
training images, or images that were never assigned a split) is refused with one clear error, so a
threshold or a selected epoch can never be tuned on the set it is reported on.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable

from sklearn.metrics import roc_auc_score

from defectmine.errors import ConfigError
from defectmine.evaluation._validate import labels_and_scores
from defectmine.evaluation.thresholds import max_f1_threshold

VAL = "val"


def check_val_only(dataset: Any, purpose: str) -> None:
    """Raise ConfigError unless every record of `dataset` (anything with `.records`) has split "val".

    Args:
        dataset: an ImageDataset (or any object with a `records` list of `Record`).
        purpose: what the data is for, named in the error ("the threshold", "model selection").
    """
    records = getattr(dataset, "records", None)
    if records is None:
        raise ConfigError(f"{purpose} takes a dataset whose records carry their split; got {type(dataset).__name__}.")
    splits = Counter(r.split for r in records)
    other = {split: n for split, n in splits.items() if split != VAL}
    if other:
        found = ", ".join(f"{n} {'unsplit' if not split else repr(split)}" for split, n in sorted(other.items()))
        example = next(r for r in records if r.split != VAL)
        raise ConfigError(
            f"{purpose} uses validation images only, but {found} image(s) are not from the 'val' split "
            f"(e.g. {example.path}). Fix: pass the validation set (records with split 'val', e.g. Split.val "
            "after make_split or a manifest's split column); the test set is for reporting only."
        )


def auroc(labels: Any, scores: Any) -> float:
    """Image AUROC (needs both classes)."""
    y, s = labels_and_scores(labels, scores)
    return float(roc_auc_score(y, s))


def max_f1(labels: Any, scores: Any) -> float:
    """The best F1 over thresholds (the value the max-F1 threshold rule reaches)."""
    return max_f1_threshold(labels, scores).params["f1"]


SELECTION_METRICS: dict[str, Callable[[Any, Any], float]] = {"auroc": auroc, "max_f1": max_f1}


def validation_value(metric: str, val: Any, scores: Any) -> float:
    """The model-selection `metric` ("auroc" or "max_f1") of `scores` on the validation set `val`."""
    try:
        fn = SELECTION_METRICS[metric]
    except KeyError:
        raise ConfigError(f"unknown model-selection metric {metric!r}; use one of {', '.join(SELECTION_METRICS)}.") from None
    check_val_only(val, "model selection")
    return fn(val.labels, scores)
