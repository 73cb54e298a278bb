"""Seed ensembles of trained detectors (`-p ensemble=n`): fit, score, save/load, export, bad values."""

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from defectmine.errors import ConfigError, DataError
from defectmine.models import ensemble
from defectmine.models.registry import create, load_detector

SMALL = {"epochs": 2, "width": 4, "batch_size": 4, "device": "cpu", "quiet": True}


@pytest.fixture(scope="module")
def sets(tiny_training_sets):
    return tiny_training_sets


@pytest.fixture(scope="module")
def val(sets):
    from defectmine.data.dataset import ImageDataset

    normal, anomalous = sets
    pixels = torch.cat([normal.raw_images()[:4], anomalous.raw_images()])
    return ImageDataset.from_tensor(pixels, normal.spec, labels=[0] * 4 + [1] * 3, split="val")


@pytest.fixture(scope="module")
def fcdd_ensemble(sets, val):
    return create("fcdd", ensemble=3, seed=5, **SMALL).fit(*sets, val=val)


def test_standardised_mean_of_numpy_and_torch_agree():
    members = [np.array([1.0, 2.0, 3.0]), np.array([10.0, 30.0, 20.0])]
    standardisers = [ensemble.standardiser(m) for m in members]
    as_numpy = ensemble.standardised_mean(members, standardisers)
    as_torch = ensemble.standardised_mean([torch.tensor(m) for m in members], standardisers)
    np.testing.assert_allclose(as_torch.numpy(), as_numpy)
    # each member standardised to mean 0, std 1 before the mean: neither member's scale dominates
    np.testing.assert_allclose(as_numpy, [(-1.2247 - 1.2247) / 2, (0 + 1.2247) / 2, (1.2247 + 0) / 2], atol=1e-4)


def test_constant_member_gets_scale_one_not_nan():
    assert ensemble.standardiser(np.array([2.0, 2.0])) == (2.0, 1.0)
    with pytest.raises(ValueError, match="not finite"):
        ensemble.standardiser(np.array([1.0, np.nan]))


def test_members_are_the_seeds_fitted_alone(sets, val, fcdd_ensemble):
    assert [m.config.seed for m in fcdd_ensemble.members_] == [5, 6, 7]
    assert len(fcdd_ensemble.network_) == 3 and len(fcdd_ensemble.member_best_epochs_) == 3
    alone = create("fcdd", seed=6, **SMALL).fit(*sets, val=val)
    np.testing.assert_allclose(fcdd_ensemble.members_[1].score(val).image, alone.score(val).image, rtol=1e-5)


def test_ensemble_score_is_the_standardised_mean_of_its_members(sets, val, fcdd_ensemble):
    normal = sets[0]
    members = [m.score(normal) for m in fcdd_ensemble.members_]
    references = [m.score(val, maps=False).image for m in fcdd_ensemble.members_]
    standardisers = [ensemble.standardiser(r) for r in references]
    scores = fcdd_ensemble.score(normal)
    np.testing.assert_allclose(scores.image, ensemble.standardised_mean([m.image for m in members], standardisers),
                               rtol=1e-4, atol=1e-5)
    assert scores.maps.shape == (len(normal), 16, 16)
    # the helper that benchmarks use without fitting agrees with the fitted ensemble
    labels = val.labels
    kept = ensemble.seed_ensemble_auroc(labels, references, references)
    assert kept == pytest.approx(roc_auc_score(labels, fcdd_ensemble.score(val, maps=False).image))


def test_save_load_round_trip_keeps_members_and_standardisers(sets, fcdd_ensemble, tmp_path):
    fcdd_ensemble.save(tmp_path / "model")
    state = json.loads((tmp_path / "model" / "config.json").read_text())["state"]
    assert len(state["ensemble"]["members"]) == 3
    loaded = load_detector(tmp_path / "model")
    assert loaded.config.ensemble == 3 and len(loaded.members_) == 3
    np.testing.assert_allclose(loaded.score(sets[0]).image, fcdd_ensemble.score(sets[0]).image, rtol=1e-5)
    np.testing.assert_allclose(loaded.score(sets[0]).maps, fcdd_ensemble.score(sets[0]).maps, rtol=1e-4, atol=1e-6)


def test_broken_ensemble_state_names_the_file(fcdd_ensemble, tmp_path):
    folder = fcdd_ensemble.save(tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    config["state"]["ensemble"]["members"] = config["state"]["ensemble"]["members"][:2]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(DataError, match="config.json: its 'state' cannot be restored"):
        load_detector(folder)


def test_classifier_ensemble_with_tta_and_gradcam(sets, val):
    detector = create("classifier", loss="ce", stride=8, ensemble=2, tta=True, **SMALL).fit(*sets, val=val)
    scores = detector.score(val)
    assert np.isfinite(scores.image).all() and scores.maps.shape == (len(val), 16, 16)
    cams = detector.score(val, heatmap="gradcam").maps
    assert cams.shape == (len(val), 16, 16) and np.isfinite(cams).all()


def test_without_val_members_are_standardised_on_the_training_normals(sets):
    detector = create("fcdd", ensemble=2, **SMALL).fit(*sets)
    normal_scores = [m.score(sets[0], maps=False).image for m in detector.members_]
    assert detector.standardisers_ == [ensemble.standardiser(s) for s in normal_scores]


def test_on_validation_reports_the_first_member_only(sets, val):
    seen = []
    create("fcdd", ensemble=2, eval_every=1, **SMALL).fit(*sets, val=val, on_validation=lambda e, v: seen.append(e))
    assert seen == [0, 1]  # epochs 0 and 1 of the first member; none from the second


@pytest.mark.parametrize("size", [0, -1, 1.5, True, "3"])
def test_bad_ensemble_sizes_raise_one_config_error(size):
    with pytest.raises(ConfigError, match="ensemble"):
        create("fcdd", ensemble=size)


@pytest.mark.slow
def test_ensemble_exports_with_the_checkpoints_scores(sets, tmp_path):
    pytest.importorskip("onnxruntime")
    from defectmine.export import export_model, load_exported

    # 2 epochs: members' scores spread over ~1e-5, where FCDD's pseudo-Huber must not cancel in float32
    detector = create("fcdd", ensemble=2, **SMALL).fit(*sets)
    folder = detector.save(tmp_path / "model")
    result = export_model(folder, format="onnx")
    assert result.info.parity_max_abs_diff <= 1e-4
    pixels = sets[0].raw_images()[:3]
    expected = load_detector(folder).score(pixels)
    got = load_exported(result.path).score(pixels.numpy())
    np.testing.assert_allclose(got.image, expected.image, atol=1e-4, rtol=0)
