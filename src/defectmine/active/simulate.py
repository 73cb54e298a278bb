"""Replay a labelling campaign on a fully labelled pool: start from a small seed set, let an acquisition
function pick a batch per round, "label" it from the known labels, retrain, and measure on a fixed test set.

Every model here is trained on frozen embeddings (a linear or small MLP head), so that dozens of
campaigns run in minutes on a CPU; the paper fine-tunes a network each round instead.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from defectmine.active.base import SCORES, Acquisition, Pool
from defectmine.active.functions import knn_anomaly_scores
from defectmine.active.registry import create
from defectmine.errors import ConfigError, DataError


@dataclass(frozen=True)
class SimulationConfig:
    """Budget and models of one simulated campaign.

    Attributes:
        n_seed: images labelled before the first round.
        seed_minority: how many of them are minority images (the discriminator needs at least one; a
            person starting a campaign for a rare defect usually has a few examples), the rest random.
        batch: images labelled per round.
        rounds: number of rounds; the final budget is n_seed + rounds * batch.
        knn: neighbours of the kNN anomaly scores that feed "anomaly" (distance to labelled normals).
        C: inverse L2 strength of the evaluation classifier (multinomial logistic regression).
    """

    n_seed: int = 20
    seed_minority: int = 2
    batch: int = 20
    rounds: int = 10
    knn: int = 5
    C: float = 1.0

    def __post_init__(self) -> None:
        for name in ("n_seed", "batch", "rounds", "knn"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"SimulationConfig.{name}={value!r} must be a positive integer.")
        if not 0 <= self.seed_minority <= self.n_seed:
            raise ConfigError(f"SimulationConfig.seed_minority={self.seed_minority!r} must lie in 0..n_seed ({self.n_seed}).")
        if not self.C > 0:
            raise ConfigError(f"SimulationConfig.C={self.C!r} must be > 0.")

    @property
    def budgets(self) -> list[int]:
        """Labels spent after the seed set and after each round."""
        return [self.n_seed + r * self.batch for r in range(self.rounds + 1)]


def seed_set(labels: np.ndarray, minority: int, config: SimulationConfig, rng: np.random.Generator) -> np.ndarray:
    """The first labelled pool indices: `seed_minority` random minority images plus random others."""
    minority_idx = np.flatnonzero(labels == minority)
    if len(minority_idx) < config.seed_minority:
        raise DataError(f"the pool holds {len(minority_idx)} images of minority class {minority}, fewer than "
                        f"seed_minority={config.seed_minority}. Fix: lower seed_minority or pick another class.")
    known = rng.choice(minority_idx, config.seed_minority, replace=False)
    rest = np.setdiff1d(np.arange(len(labels)), known)
    return np.concatenate([known, rng.choice(rest, config.n_seed - config.seed_minority, replace=False)])


def test_metrics(model: LogisticRegression, test_x: np.ndarray, test_y: np.ndarray, minority: int) -> dict:
    """Accuracy over all classes and the minority class's recall and precision (0 when never predicted)."""
    predicted = model.predict(test_x)
    hits = (predicted == minority) & (test_y == minority)
    n_predicted = int((predicted == minority).sum())
    return {
        "accuracy": float((predicted == test_y).mean()),
        "minority_recall": float(hits.sum() / max(int((test_y == minority).sum()), 1)),
        "minority_precision": float(hits.sum() / n_predicted) if n_predicted else 0.0,
    }


def simulate(pool_features: np.ndarray, pool_labels: np.ndarray, test_features: np.ndarray, test_labels: np.ndarray,
             *, minority: int, acquisition: str | Acquisition, seed: int = 0,
             config: SimulationConfig = SimulationConfig(), normal_class: int = 0, **options) -> dict:
    """One campaign; returns {"config", "curve": one dict per budget (labels, minority_found, accuracy,
    minority_recall, minority_precision), "seconds"}.

    minority_found counts the minority images the acquisition function picked (the seed set's own are
    not counted). The evaluation classifier, a class-balanced multinomial logistic regression on the
    standardised embeddings, is the same for every acquisition function: only the labelled set differs.
    `normal_class` marks the labels whose images feed the kNN anomaly scores of "anomaly".
    """
    function = create(acquisition, **options) if isinstance(acquisition, str) else acquisition
    pool_labels, test_labels = np.asarray(pool_labels, dtype=np.int64), np.asarray(test_labels, dtype=np.int64)
    if len(pool_labels) != len(pool_features) or len(test_labels) != len(test_features):
        raise DataError("simulate: every pool and test embedding needs one label. Fix: pass arrays of equal length.")
    if config.n_seed + config.rounds * config.batch > len(pool_labels):
        raise ConfigError(f"the budget {config.budgets[-1]} exceeds the pool of {len(pool_labels)} images. "
                          "Fix: fewer rounds or a smaller batch.")
    rng = np.random.default_rng(seed)
    labelled = seed_set(pool_labels, minority, config, rng)
    scaler = StandardScaler().fit(pool_features)
    pool_x, test_x = scaler.transform(pool_features), scaler.transform(test_features)
    curve, started = [], time.perf_counter()
    for round_ in range(config.rounds + 1):
        model = LogisticRegression(C=config.C, class_weight="balanced", max_iter=2000)
        model.fit(pool_x[labelled], pool_labels[labelled])
        found = int((pool_labels[labelled[config.n_seed:]] == minority).sum())
        curve.append({"labels": len(labelled), "minority_found": found,
                      **test_metrics(model, test_x, test_labels, minority)})
        if round_ == config.rounds:
            break
        scores = None
        if SCORES in function.needs:
            normals = labelled[pool_labels[labelled] == normal_class]
            scores = knn_anomaly_scores(pool_features, normals, config.knn)
        pool = Pool(features=pool_features, scores=scores, labelled=labelled, labels=pool_labels[labelled],
                    minority=minority)
        function.check(pool)
        labelled = np.concatenate([labelled, function.select(pool, config.batch, rng)])
    return {"config": asdict(config), "curve": curve, "seconds": time.perf_counter() - started}
