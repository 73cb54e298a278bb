"""Acquisition functions: the registry contract, hand-computed rankings and scores, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from defectmine.active import ACQUISITIONS, Pool, acquire, bald, create, knn_anomaly_scores, predictive_entropy
from defectmine.active.uncertainty import mc_dropout_probabilities
from defectmine.errors import ConfigError, DataError


def _pool(seed: int = 0):
    """120 normal (class 0), 20 of class 1, 8 minority (class 2) embeddings; the minority is far out on axis 0."""
    rng = np.random.default_rng(seed)
    labels = np.r_[np.zeros(120, int), np.ones(20, int), np.full(8, 2)]
    x = rng.normal(size=(len(labels), 6))
    x[:, 0] += 6.0 * (labels == 2)
    x[:, 1] += 6.0 * (labels == 1)
    labelled = np.r_[0:10, 120:122, 140:142]  # 10 normal, 2 of class 1, 2 minority
    scores = np.abs(x[:, 0]) + np.abs(x[:, 1])
    return x, labels, labelled, scores


# Short dropout training: the contract is about indices, not about how well the MLP fits.
FAST = {"bald": dict(epochs=20, passes=5), "entropy": dict(epochs=20, passes=5)}


def _kwargs(seed: int = 0) -> dict:
    x, labels, labelled, scores = _pool(seed)
    return dict(features=x, scores=scores, labelled=labelled, labels=labels[labelled], minority=2)


@pytest.mark.parametrize("name", list(ACQUISITIONS))
def test_every_acquisition_returns_k_distinct_unlabelled_indices_reproducibly(name):
    kwargs = _kwargs()
    picks = acquire(name, k=7, seed=3, **kwargs, **FAST.get(name, {}))
    assert picks.shape == (7,) and picks.dtype == np.int64
    assert len(set(picks.tolist())) == 7
    assert not set(picks.tolist()) & set(kwargs["labelled"].tolist())
    assert ((0 <= picks) & (picks < 148)).all()
    np.testing.assert_array_equal(picks, acquire(name, k=7, seed=3, **kwargs, **FAST.get(name, {})))
    assert ACQUISITIONS[name].name == name


@pytest.mark.parametrize("name", list(ACQUISITIONS))
def test_k_beyond_the_unlabelled_images_returns_all_that_are_left(name):
    kwargs = _kwargs()
    kwargs["labelled"] = np.r_[0:140, 141:148]  # only image 140 (a minority one) is left
    kwargs["labels"] = _pool()[1][kwargs["labelled"]]
    np.testing.assert_array_equal(acquire(name, k=5, **kwargs, **FAST.get(name, {})), [140])


def test_minority_discriminator_finds_the_separable_minority_and_random_does_not():
    kwargs = _kwargs()
    minority_left = set(range(142, 148))
    assert set(acquire("minority", k=6, **kwargs).tolist()) == minority_left
    assert len(set(acquire("random", k=6, seed=0, **kwargs).tolist()) & minority_left) < 3


def test_seeds_change_random_picks():
    kwargs = _kwargs()
    assert not np.array_equal(acquire("random", k=10, seed=0, **kwargs), acquire("random", k=10, seed=1, **kwargs))


def test_anomaly_top_k_orders_by_score():
    scores = np.array([0.1, 5.0, 3.0, 9.0, 4.0])
    np.testing.assert_array_equal(acquire("anomaly", scores=scores, labelled=[3], labels=[1], k=3), [1, 4, 2])


def test_kcenter_picks_the_farthest_point_then_the_next_farthest_from_all_picked():
    features = np.array([[0.0], [1.0], [2.0], [10.0], [5.0]])
    np.testing.assert_array_equal(acquire("kcenter", features=features, labelled=[0], labels=[0], k=2), [3, 4])
    picks = acquire("kcenter", features=features, k=5, seed=0)  # nothing labelled: random start, then spread
    assert sorted(picks.tolist()) == [0, 1, 2, 3, 4]


def test_entropy_and_bald_by_hand():
    # image 0: both passes unsure (0.5/0.5); image 1: passes sure but opposite; image 2: both sure and agreeing.
    probs = np.array([[[0.5, 0.5], [1.0, 0.0], [1.0, 0.0]],
                      [[0.5, 0.5], [0.0, 1.0], [1.0, 0.0]]])
    np.testing.assert_allclose(predictive_entropy(probs), [math.log(2), math.log(2), 0.0], atol=1e-9)
    np.testing.assert_allclose(bald(probs), [0.0, math.log(2), 0.0], atol=1e-9)


def test_mc_dropout_is_seeded_normalised_and_leaves_the_global_generator_alone():
    x, labels, labelled, _ = _pool()
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    run = lambda seed: mc_dropout_probabilities(x[labelled], np.searchsorted([0, 1, 2], labels[labelled]), x[:30],  # noqa: E731
                                                n_classes=3, epochs=20, passes=4, seed=seed)
    first = run(0)
    assert torch.rand(1) == before
    assert first.shape == (4, 30, 3)
    np.testing.assert_allclose(first.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(first, run(0))
    assert not np.array_equal(first[0], first[1])  # dropout stays on: passes differ


def test_knn_anomaly_scores_rank_the_outlier_first():
    features = np.r_[np.random.default_rng(0).normal(size=(20, 3)), [[30.0, 30.0, 30.0]]]
    scores = knn_anomaly_scores(features, normal=np.arange(10), k=3)
    assert scores.shape == (21,) and int(np.argmax(scores)) == 20
    with pytest.raises(ConfigError, match="at least 2 known-normal"):
        knn_anomaly_scores(features, normal=[0])


@pytest.mark.parametrize("change, error, match", [
    (dict(labelled=[0, 0], labels=[0, 0]), DataError, "twice"),
    (dict(labelled=[0, 500], labels=[0, 0]), DataError, "outside the pool"),
    (dict(labelled=[0, 1], labels=[0]), DataError, "one label per labelled index"),
    (dict(labelled=[0.5], labels=[0]), DataError, "integers"),
    (dict(features=np.full((148, 6), np.nan)), DataError, "NaN"),
    (dict(scores=np.zeros(3)), DataError, "one score per pool image"),
])
def test_bad_pools_give_one_clear_error(change, error, match):
    kwargs = {**_kwargs(), **change}
    with pytest.raises(error, match=match):
        acquire("random", k=3, **kwargs)


@pytest.mark.parametrize("name, change, match", [
    ("anomaly", dict(scores=None), "needs scores"),
    ("minority", dict(minority=None), "needs minority"),
    ("minority", dict(minority=7), "no minority images"),
    ("bald", dict(labelled=[0, 1], labels=[0, 0]), "at least 2 classes"),
    ("kcenter", dict(features=None), "needs features"),
])
def test_missing_inputs_name_what_to_pass(name, change, match):
    with pytest.raises(ConfigError, match=match):
        acquire(name, k=3, **{**_kwargs(), **change})


def test_unknown_names_options_and_k():
    with pytest.raises(ConfigError, match="unknown acquisition function 'coreset'"):
        acquire("coreset", k=3, **_kwargs())
    with pytest.raises(ConfigError, match="no option lr"):
        create("minority", lr=0.1)
    with pytest.raises(ConfigError, match="C=0"):
        create("minority", C=0)
    with pytest.raises(ConfigError, match="dropout"):
        create("bald", dropout=1.0)
    for k in (0, -1, 2.5, True):
        with pytest.raises(ConfigError, match="positive integer"):
            acquire("random", k=k, **_kwargs())
    with pytest.raises(ConfigError, match="every pool image is labelled"):
        acquire("random", k=1, features=np.zeros((2, 1)), labelled=[0, 1], labels=[0, 1])


def test_pool_knows_its_unlabelled_images():
    pool = Pool(scores=np.zeros(5), labelled=[4, 1], labels=[0, 1])
    np.testing.assert_array_equal(pool.unlabelled, [0, 2, 3])
    assert pool.size == 5
