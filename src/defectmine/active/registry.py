"""The registry of acquisition functions and `acquire`, the one call a labelling loop needs."""

from __future__ import annotations

import inspect

import numpy as np

from defectmine.active.base import Acquisition, Pool, check_k
from defectmine.active.functions import AnomalyTopK, KCenterGreedy, MinorityDiscriminator, RandomAcquisition
from defectmine.active.uncertainty import BALD, PredictiveEntropy
from defectmine.errors import ConfigError, lookup

ACQUISITIONS: dict[str, type[Acquisition]] = {
    "minority": MinorityDiscriminator,
    "bald": BALD,
    "entropy": PredictiveEntropy,
    "anomaly": AnomalyTopK,
    "kcenter": KCenterGreedy,
    "random": RandomAcquisition,
}


def create(name: str, **options) -> Acquisition:
    """The acquisition function `name` with its `options`; ConfigError for an unknown name or option."""
    cls = lookup(ACQUISITIONS, name, "acquisition function")
    known = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"acquisition {name!r} has no option {', '.join(unknown)}; "
                          f"its options: {', '.join(known) or 'none'}.")
    return cls(**options)


def acquire(name: str, *, features=None, scores=None, labelled=(), labels=(), minority: int | None = None,
            k: int, seed: int = 0, **options) -> np.ndarray:
    """Pool indices of the (up to) `k` unlabelled images to label next, best first.

    Args:
        name: a key of `ACQUISITIONS`: "minority" (the paper's minority discriminator), "bald",
            "entropy" (MC dropout), "anomaly" (top anomaly scores), "kcenter" (diversity), "random".
        features: (N, D) embeddings of every pool image (e.g. `defectmine.active.embed`).
        scores: (N,) anomaly scores of every pool image from any detector ("anomaly" only).
        labelled, labels: pool indices labelled so far and their integer class ids.
        minority: the class id wanted ("minority" only).
        k: how many to pick (fewer when fewer are left unlabelled).
        seed: seeds every random choice (ties, dropout, initialisation): same inputs, same picks.
        **options: the function's own options, e.g. `C=0.5` or `passes=30`.
    """
    function = create(name, **options)
    pool = Pool(features=features, scores=scores, labelled=labelled, labels=labels, minority=minority)
    function.check(pool)
    return function.select(pool, check_k(k, pool), np.random.default_rng(seed))
