"""Uncertainty acquisition with Monte-Carlo dropout (Gal et al. 2017): predictive entropy and BALD
(Houlsby et al. 2011), from a small dropout MLP trained on the labelled embeddings.

The two scores are pure functions of the (T, N, C) class probabilities of T dropout passes, so that any
stochastic model can feed them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from defectmine.active.base import FEATURES, Acquisition, Pool, classes_of
from defectmine.active.functions import standardised
from defectmine.errors import ConfigError

_EPS = 1e-12


def predictive_entropy(probs: np.ndarray) -> np.ndarray:
    """(N,) entropy (nats) of the mean prediction over the T passes of `probs` (T, N, C)."""
    mean = np.asarray(probs, dtype=np.float64).mean(axis=0)
    return -(mean * np.log(mean + _EPS)).sum(axis=-1)


def bald(probs: np.ndarray) -> np.ndarray:
    """(N,) BALD mutual information: entropy of the mean prediction minus the mean entropy of the
    T passes of `probs` (T, N, C); high where the passes disagree, not where each is merely unsure."""
    probs = np.asarray(probs, dtype=np.float64)
    expected = -(probs * np.log(probs + _EPS)).sum(axis=-1).mean(axis=0)
    return np.maximum(predictive_entropy(probs) - expected, 0.0)  # >= 0 in exact arithmetic


def mc_dropout_probabilities(train_x: np.ndarray, train_y: np.ndarray, x: np.ndarray, *, n_classes: int,
                             hidden: int = 64, dropout: float = 0.5, epochs: int = 200, lr: float = 1e-3,
                             passes: int = 20, seed: int = 0) -> np.ndarray:
    """(passes, N, n_classes) softmax outputs for `x` of a one-hidden-layer MLP trained full-batch on
    (`train_x`, `train_y` in 0..n_classes-1) with dropout left on at prediction time. Seeded, and the
    global torch generator is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(train_x.shape[1], hidden), nn.ReLU(), nn.Dropout(dropout),
                            nn.Linear(hidden, n_classes))
        optimiser = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)
        inputs = torch.as_tensor(train_x, dtype=torch.float32)
        targets = torch.as_tensor(train_y, dtype=torch.long)
        net.train()
        for _ in range(epochs):  # a few hundred labelled points: full batch is exact and fast
            optimiser.zero_grad()
            nn.functional.cross_entropy(net(inputs), targets).backward()
            optimiser.step()
        with torch.no_grad():  # net stays in train mode: dropout is the posterior sample
            queries = torch.as_tensor(x, dtype=torch.float32)
            return torch.stack([net(queries).softmax(dim=-1) for _ in range(passes)]).numpy()


class _MCDropout(Acquisition):
    needs = (FEATURES,)

    def __init__(self, hidden: int = 64, dropout: float = 0.5, epochs: int = 200, passes: int = 20) -> None:
        if not 0 < dropout < 1:
            raise ConfigError(f"dropout={dropout!r} must lie strictly between 0 and 1, e.g. 0.5.")
        for option, value in (("hidden", hidden), ("epochs", epochs), ("passes", passes)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{option}={value!r} must be a positive integer.")
        self.hidden, self.dropout, self.epochs, self.passes = hidden, dropout, epochs, passes

    def probabilities(self, pool: Pool, rng: np.random.Generator) -> np.ndarray:
        classes = classes_of(pool.labels, 2, self.name, "label images of two classes first (or start with 'random').")
        x = standardised(pool.features)
        return mc_dropout_probabilities(
            x[pool.labelled], np.searchsorted(classes, pool.labels), x[pool.unlabelled], n_classes=len(classes),
            hidden=self.hidden, dropout=self.dropout, epochs=self.epochs, passes=self.passes,
            seed=int(rng.integers(2**31)))


class PredictiveEntropy(_MCDropout):
    """The unlabelled images whose mean MC-dropout prediction is most uncertain (highest entropy)."""

    name = "entropy"

    def utility(self, pool: Pool, rng: np.random.Generator) -> np.ndarray:
        return predictive_entropy(self.probabilities(pool, rng))


class BALD(_MCDropout):
    """Bayesian active learning by disagreement: the unlabelled images on which MC-dropout passes disagree most."""

    name = "bald"

    def utility(self, pool: Pool, rng: np.random.Generator) -> np.ndarray:
        return bald(self.probabilities(pool, rng))
