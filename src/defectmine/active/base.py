"""The one interface of acquisition functions: a `Pool` in, the indices to label next out.

    pool = Pool(features=embeddings, labelled=[3, 17, 40], labels=[0, 2, 0], minority=2)
    picks = MinorityDiscriminator().select(pool, k=10, rng=np.random.default_rng(0))

An acquisition function never trains the model that is finally used, never reads files and never
knows a dataset: it gets arrays (embeddings of every pool image, the labels given so far, optional
anomaly scores from any detector) and returns global pool indices, best first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from defectmine.errors import ConfigError, DataError

#: What an acquisition function may need from a pool (its `needs`).
FEATURES, SCORES, MINORITY = "features", "scores", "minority"


@dataclass(frozen=True)
class Pool:
    """Everything an acquisition function sees about the pool of candidate images.

    Attributes:
        features: (N, D) embeddings of every pool image, labelled or not (None when only scores are used).
        labelled: (L,) indices into the pool of the images labelled so far, each once.
        labels: (L,) integer class ids of those images, in the same order (any ids: 0 normal, 1.. defects).
        minority: the class id whose images are wanted ("minority" acquisition only).
        scores: (N,) anomaly scores of every pool image, higher = more anomalous, from any detector.
    """

    features: np.ndarray | None = None
    labelled: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    minority: int | None = None
    scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen dataclass)
        if self.features is not None:
            set_("features", _float_array(self.features, "features", ndim=2))
        if self.scores is not None:
            set_("scores", _float_array(self.scores, "scores", ndim=1))
        set_("labelled", _int_array(self.labelled, "labelled"))
        set_("labels", _int_array(self.labels, "labels"))
        self._check()

    @property
    def size(self) -> int:
        """Number of images in the pool (labelled and unlabelled)."""
        if self.features is not None:
            return len(self.features)
        if self.scores is not None:
            return len(self.scores)
        raise ConfigError("the pool has neither features nor scores. Fix: pass features= (embeddings) or scores=.")

    @property
    def unlabelled(self) -> np.ndarray:
        """Pool indices not labelled yet, ascending."""
        mask = np.ones(self.size, dtype=bool)
        mask[self.labelled] = False
        return np.flatnonzero(mask)

    def _check(self) -> None:
        n = self.size
        if self.features is not None and self.scores is not None and len(self.scores) != n:
            raise DataError(f"scores has {len(self.scores)} values for {n} feature rows. Fix: one score per pool image.")
        if len(self.labels) != len(self.labelled):
            raise DataError(f"labels has {len(self.labels)} values for {len(self.labelled)} labelled indices. "
                            "Fix: give one label per labelled index, in the same order.")
        if len(self.labelled) and (self.labelled.min() < 0 or self.labelled.max() >= n):
            raise DataError(f"labelled holds indices outside the pool of {n} images. Fix: use 0..{n - 1}.")
        if len(np.unique(self.labelled)) != len(self.labelled):
            raise DataError("labelled lists an image twice. Fix: label every pool index once.")


def _float_array(values, name: str, *, ndim: int) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != ndim or not len(array):
        shape = "(N, D)" if ndim == 2 else "(N,)"
        raise DataError(f"{name} must be a non-empty {shape} array, got shape {array.shape}.")
    if not np.isfinite(array).all():
        raise DataError(f"{name} holds NaN or infinite values. Fix: recompute them (or drop those images).")
    return array


def _int_array(values, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"{name} must be a 1-D array of integers, got {array.dtype} of shape {array.shape}.")
    return array.astype(np.int64)


class Acquisition:
    """Base of acquisition functions (sklearn vocabulary: `__init__` stores options only).

    Subclasses set `name` and `needs` and implement either `utility` (higher = label first; `select`
    takes the top k, ties broken at random) or `select` itself (for sequential picks such as k-center).
    """

    name: ClassVar[str]
    needs: ClassVar[tuple[str, ...]] = ()

    def get_config(self) -> dict:
        """The keyword arguments that rebuild this acquisition function."""
        return dict(vars(self))

    def check(self, pool: Pool) -> None:
        """Raise ConfigError when `pool` lacks what this function needs."""
        missing = {FEATURES: pool.features is None, SCORES: pool.scores is None, MINORITY: pool.minority is None}
        lacking = [need for need in self.needs if missing[need]]
        if lacking:
            raise ConfigError(f"acquisition {self.name!r} needs {' and '.join(lacking)}. "
                              f"Fix: pass {', '.join(f'{need}=' for need in lacking)} to acquire().")

    def utility(self, pool: Pool, rng: np.random.Generator) -> np.ndarray:
        """(U,) value of labelling each of `pool.unlabelled`; higher is better."""
        raise NotImplementedError

    def select(self, pool: Pool, k: int, rng: np.random.Generator) -> np.ndarray:
        """Up to `k` pool indices of unlabelled images to label next, best first."""
        candidates = pool.unlabelled
        values = np.asarray(self.utility(pool, rng), dtype=np.float64)
        # Random tie-breaking: a constant utility (e.g. an uninformed model) must not mean "lowest index first".
        order = np.lexsort((rng.random(len(candidates)), -values))
        return candidates[order[:k]]


def check_k(k: int, pool: Pool) -> int:
    """`k` limited to the unlabelled images left; ConfigError for k < 1 or an exhausted pool."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k={k!r}: the number of images to pick must be a positive integer, e.g. 20.")
    left = len(pool.unlabelled)
    if not left:
        raise ConfigError("every pool image is labelled already: nothing left to pick.")
    return int(min(k, left))


def classes_of(labels: np.ndarray, need: int, name: str, hint: str) -> np.ndarray:
    """The distinct labelled classes, or ConfigError when there are fewer than `need`."""
    classes = np.unique(labels)
    if len(classes) < need:
        raise ConfigError(f"acquisition {name!r} needs labelled images of at least {need} classes, "
                          f"got {len(classes)}. Fix: {hint}")
    return classes
