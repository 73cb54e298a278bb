"""Acquisition functions that need no dropout network: random, the minority discriminator, anomaly-score
top-k and k-center diversity."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import pairwise_distances
from sklearn.preprocessing import StandardScaler

from defectmine.active.base import FEATURES, MINORITY, SCORES, Acquisition, Pool
from defectmine.errors import ConfigError


def standardised(features: np.ndarray) -> np.ndarray:
    """Features scaled to zero mean and unit variance over the whole pool (labels unused), so that
    distances and linear models do not depend on the encoder's raw activation scale."""
    return StandardScaler().fit_transform(features)


class RandomAcquisition(Acquisition):
    """Uniformly random picks: the baseline every other function must beat."""

    name = "random"

    def utility(self, pool: Pool, rng: np.random.Generator) -> np.ndarray:
        return rng.random(len(pool.unlabelled))


class MinorityDiscriminator(Acquisition):
    """The paper's minority discriminator (Frick et al. 2022): a binary minority-vs-rest model trained on
    the labelled images ranks the unlabelled ones by their probability of being the minority class.

    Here the discriminator is an L2-regularised logistic regression on the pool embeddings with
    balanced class weights (the minority is a handful of images among hundreds); the paper fine-tunes
    a network. `C` is the inverse regularisation strength.
    """

    name = "minority"
    needs = (FEATURES, MINORITY)

    def __init__(self, C: float = 1.0) -> None:
        if not C > 0:
            raise ConfigError(f"C={C!r}: the inverse regularisation strength must be > 0, e.g. 1.0.")
        self.C = C

    def utility(self, pool: Pool, rng: np.random.Generator) -> np.ndarray:
        target = pool.labels == pool.minority
        if target.all() or not target.any():
            have = "no" if not target.any() else "only"
            raise ConfigError(
                f"acquisition 'minority' needs labelled images of the minority class {pool.minority} and of "
                f"other classes; the labelled set holds {have} minority images. Fix: label at least one of "
                "each first (or start with 'anomaly' or 'random')."
            )
        x = standardised(pool.features)
        model = LogisticRegression(C=self.C, class_weight="balanced", max_iter=2000)
        model.fit(x[pool.labelled], target)
        return model.predict_proba(x[pool.unlabelled])[:, 1]


class AnomalyTopK(Acquisition):
    """The most anomalous unlabelled images first, by the pool's anomaly scores from any detector
    (`detector.score(pool_images).image`, or `knn_anomaly_scores`)."""

    name = "anomaly"
    needs = (SCORES,)

    def utility(self, pool: Pool, rng: np.random.Generator) -> np.ndarray:
        return pool.scores[pool.unlabelled]


class KCenterGreedy(Acquisition):
    """Diversity (Sener & Savarese's core-set, greedy k-center): each pick is the unlabelled image
    farthest, in standardised embedding space, from everything labelled or picked before it."""

    name = "kcenter"
    needs = (FEATURES,)

    def select(self, pool: Pool, k: int, rng: np.random.Generator) -> np.ndarray:
        x = standardised(pool.features)
        candidates = pool.unlabelled
        if len(pool.labelled):
            nearest = pairwise_distances(x[candidates], x[pool.labelled]).min(axis=1)
        else:
            nearest = np.full(len(candidates), np.inf)
        picks = []
        for _ in range(k):
            # With nothing labelled yet every image is infinitely far: the first centre is a random one.
            best = int(np.argmax(nearest)) if np.isfinite(nearest).any() else int(rng.integers(len(candidates)))
            picks.append(best)
            nearest = np.minimum(nearest, pairwise_distances(x[candidates], x[candidates[best]][None]).ravel())
            nearest[best] = -np.inf  # never picked twice, even when every distance is 0
        return candidates[np.asarray(picks, dtype=np.int64)]


def knn_anomaly_scores(features: np.ndarray, normal: np.ndarray, k: int = 5) -> np.ndarray:
    """(N,) anomaly score of every pool image: mean standardised-embedding distance to its `k` nearest
    known-normal images (`normal`: pool indices; a normal image's distance to itself is left out).

    A detector for when no other is at hand; any detector's image scores serve `AnomalyTopK` as well.
    """
    normal = np.asarray(normal, dtype=np.int64)
    if len(normal) < 2:
        raise ConfigError(f"knn_anomaly_scores needs at least 2 known-normal images, got {len(normal)}. "
                          "Fix: label a few normal images first.")
    x = standardised(np.asarray(features, dtype=np.float64))
    distances = pairwise_distances(x, x[normal])
    distances[normal, np.arange(len(normal))] = np.inf
    k = min(k, len(normal) - 1)
    return np.sort(distances, axis=1)[:, :k].mean(axis=1)
