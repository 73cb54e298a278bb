"""Embeddings of a tiny synthetic folder and simulated labelling campaigns on synthetic embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from defectmine.active import SimulationConfig, embed, simulate
from defectmine.active.simulate import seed_set, test_metrics as minority_metrics
from defectmine.data import ImageDataset, ImageSpec, scan_folder
from defectmine.errors import ConfigError, DataError


def _data(seed: int, n_normal: int, n_other: int, n_minority: int):
    rng = np.random.default_rng(seed)
    labels = np.r_[np.zeros(n_normal, int), np.ones(n_other, int), np.full(n_minority, 2)]
    x = rng.normal(size=(len(labels), 8))
    x[:, 0] += 4.0 * (labels == 2)
    x[:, 1] += 4.0 * (labels == 1)
    return x, labels


POOL, TEST = _data(0, 300, 30, 12), _data(1, 100, 10, 6)
CONFIG = SimulationConfig(n_seed=10, seed_minority=2, batch=10, rounds=4)


def test_embeddings_are_finite_seeded_and_differ_between_images(synthetic_folder):
    dataset = ImageDataset(scan_folder(synthetic_folder), ImageSpec(size=(32, 32), channels=1))
    features = embed(dataset, width=4, seed=0)
    assert features.shape == (len(dataset), 2 * (4 + 8 + 16 + 32)) and features.dtype == np.float32
    assert np.isfinite(features).all()
    np.testing.assert_array_equal(features, embed(dataset, width=4, seed=0))
    assert not np.allclose(features, embed(dataset, width=4, seed=1))
    assert np.unique(features.round(5), axis=0).shape[0] == len(dataset)
    with pytest.raises(ConfigError, match="batch_size"):
        embed(dataset, batch_size=0)


def test_a_campaign_spends_the_budget_and_counts_only_picked_minority_images():
    result = simulate(*POOL, *TEST, minority=2, acquisition="random", seed=0, config=CONFIG)
    curve = result["curve"]
    assert [row["labels"] for row in curve] == CONFIG.budgets == [10, 20, 30, 40, 50]
    assert curve[0]["minority_found"] == 0  # the seed set's two minority images are not "found"
    found = [row["minority_found"] for row in curve]
    assert found == sorted(found) and found[-1] <= 10
    for row in curve:
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["minority_recall"] <= 1 and 0 <= row["minority_precision"] <= 1
    assert result == {**simulate(*POOL, *TEST, minority=2, acquisition="random", seed=0, config=CONFIG),
                      "seconds": result["seconds"]}


def test_the_minority_discriminator_finds_more_minority_images_than_random():
    found = {name: np.mean([simulate(*POOL, *TEST, minority=2, acquisition=name, seed=s, config=CONFIG)
                            ["curve"][-1]["minority_found"] for s in range(3)]) for name in ("minority", "random")}
    assert found["minority"] >= 8 > 2 >= found["random"]


def test_anomaly_campaign_uses_the_labelled_normals():
    result = simulate(*POOL, *TEST, minority=2, acquisition="anomaly", seed=0, config=CONFIG)
    # the anomaly scores single out classes 1 and 2 (both far from the normals): most picks are defects
    assert result["curve"][-1]["minority_found"] >= 4


def test_seed_set_holds_the_known_minority_images():
    labels = POOL[1]
    picked = seed_set(labels, 2, CONFIG, np.random.default_rng(0))
    assert len(picked) == 10 == len(set(picked.tolist()))
    assert (labels[picked[:2]] == 2).all()
    with pytest.raises(DataError, match="fewer than seed_minority"):
        seed_set(labels, 2, SimulationConfig(n_seed=20, seed_minority=13), np.random.default_rng(0))


def test_minority_metrics_by_hand():
    class Fixed:
        def predict(self, x):
            return np.array([2, 2, 0, 0, 1])

    metrics = minority_metrics(Fixed(), np.zeros((5, 1)), np.array([2, 0, 2, 0, 1]), minority=2)
    assert metrics == {"accuracy": 0.6, "minority_recall": 0.5, "minority_precision": 0.5}


@pytest.mark.parametrize("kwargs, match", [
    (dict(batch=0), "batch"), (dict(rounds=1.5), "rounds"), (dict(seed_minority=30), "seed_minority"),
    (dict(C=0.0), "C=0.0"),
])
def test_bad_simulation_configs(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SimulationConfig(**kwargs)


def test_budget_larger_than_the_pool_and_mismatched_labels_are_refused():
    with pytest.raises(ConfigError, match="exceeds the pool"):
        simulate(*POOL, *TEST, minority=2, acquisition="random", config=SimulationConfig(batch=100, rounds=4))
    with pytest.raises(DataError, match="one label"):
        simulate(POOL[0], POOL[1][:-1], *TEST, minority=2, acquisition="random", config=CONFIG)
