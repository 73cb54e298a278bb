"""Classifier-specific behaviour: the loss chosen by name, priors, max-F1 model selection, CAM maps."""

import functools

import numpy as np
import pytest
import torch

from defectmine.data import ImageDataset, ImageSpec, scan_folder, write_synthetic_folder
from defectmine.data.images import normalise
from defectmine.errors import ConfigError
from defectmine.evaluation import selection
from defectmine.models import losses
from defectmine.models.registry import create, load_detector

SPEC = ImageSpec(size=(32, 32), channels=1)
FAST = {"epochs": 2, "width": 4, "stride": 2, "batch_size": 16, "device": "cpu", "quiet": True}


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = write_synthetic_folder(tmp_path_factory.mktemp("synthetic"), n_normal=36, n_anomalous=8, size=32)
    records = scan_folder(root)
    normal = [r for r in records if not r.is_anomalous]
    anomalous = [r for r in records if r.is_anomalous]
    return {
        "normal": ImageDataset(normal[:28], SPEC),
        "anomalous": ImageDataset(anomalous[:4], SPEC),
        "val": ImageDataset([r.with_split("val") for r in normal[28:] + anomalous[4:]], SPEC),
    }


def _spy(monkeypatch, name):
    """Replace loss `name` in the registry of losses by a wrapper that records its keyword arguments."""
    calls = []
    original = losses.CLASSIFICATION_LOSSES[name]

    @functools.wraps(original)  # keeps the signature, so the parameter checks still apply
    def spy(logits, labels, **params):
        calls.append(params)
        return original(logits, labels, **params)

    monkeypatch.setitem(losses.CLASSIFICATION_LOSSES, name, spy)
    return calls


def test_the_loss_chosen_by_name_is_used_with_its_parameters(monkeypatch, sets):
    focal_calls, lil_calls = _spy(monkeypatch, "focal"), _spy(monkeypatch, "lil")
    create("classifier", loss="focal", loss_params={"gamma": 0.5}, **FAST).fit(sets["normal"], sets["anomalous"])
    assert focal_calls and all(call == {"gamma": 0.5} for call in focal_calls)
    assert not lil_calls


def test_prior_based_losses_get_the_class_frequencies_of_the_batches(monkeypatch, sets):
    calls = _spy(monkeypatch, "lil")
    detector = create("classifier", loss="lil", anomaly_share=0.25, **FAST).fit(sets["normal"], sets["anomalous"])
    assert detector.priors_ == [0.75, 0.25]  # 4 of 16 places in every batch are anomalous
    assert calls and all(call["priors"] == [0.75, 0.25] for call in calls)


def test_given_priors_win_over_the_batch_frequencies(monkeypatch, sets):
    calls = _spy(monkeypatch, "lal")
    create("classifier", loss="lal", loss_params={"priors": [0.9, 0.1]}, **FAST).fit(sets["normal"], sets["anomalous"])
    assert all(call["priors"] == [0.9, 0.1] for call in calls)


def test_anomaly_share_none_is_the_training_set_share(sets):
    detector = create("classifier", anomaly_share=None, **FAST).fit(sets["normal"], sets["anomalous"])
    assert detector.anomaly_share_ == pytest.approx(4 / 32)
    assert detector.priors_ == [0.875, 0.125]  # round(16 * 4/32) = 2 anomalies per batch


def test_model_selection_keeps_the_epoch_of_the_best_validation_f1(monkeypatch, sets):
    f1_per_epoch = iter([0.3, 0.9, 0.5, 0.9])  # a tie keeps the earlier epoch
    snapshots = []

    def fake_max_f1(labels, scores):
        snapshots.append({k: v.clone() for k, v in detector.network_.state_dict().items()})
        return next(f1_per_epoch)

    monkeypatch.setitem(selection.SELECTION_METRICS, "max_f1", fake_max_f1)
    detector = create("classifier", **{**FAST, "epochs": 4, "eval_every": 1})
    detector.fit(sets["normal"], sets["anomalous"], val=sets["val"])
    assert len(snapshots) == 4
    assert detector.best_epoch_ == 1 and detector.best_val_f1_ == 0.9
    state = detector.network_.state_dict()
    assert all(torch.equal(state[k], snapshots[1][k]) for k in state)
    assert not torch.equal(state["head.weight"], snapshots[3]["head.weight"])


def test_validation_f1_is_the_max_f1_of_the_selected_model(sets):
    from defectmine.evaluation.thresholds import max_f1_threshold

    detector = create("classifier", **{**FAST, "epochs": 3}).fit(sets["normal"], sets["anomalous"], val=sets["val"])
    val_scores = detector.score(sets["val"]).image
    assert detector.best_val_f1_ == pytest.approx(max_f1_threshold(sets["val"].labels, val_scores).params["f1"])


def test_without_labelled_anomalies_synthetic_ones_are_used_and_nothing_is_selected(sets):
    detector = create("classifier", **FAST).fit(sets["normal"])
    assert detector.synthetic_ == "cutpaste"
    assert detector.best_epoch_ is None and detector.best_val_f1_ is None


def test_cam_mean_is_the_score_and_maps_come_at_input_size(sets):
    detector = create("classifier", **FAST).fit(sets["normal"], sets["anomalous"])
    with torch.no_grad():
        output = detector.network_(normalise(sets["val"].raw_images(), SPEC))
    margin = output.logits[:, 1] - output.logits[:, 0]
    assert torch.allclose(output.cam.mean(dim=(1, 2)), margin, atol=1e-5)
    scores = detector.score(sets["val"])
    np.testing.assert_allclose(scores.image, margin.numpy(), rtol=1e-5, atol=1e-6)
    assert scores.maps.shape == (len(sets["val"]), 32, 32)


def test_learned_state_survives_save_and_load(sets, tmp_path):
    detector = create("classifier", **FAST).fit(sets["normal"], sets["anomalous"], val=sets["val"])
    detector.save(tmp_path / "model")
    loaded = load_detector(tmp_path / "model")
    assert (loaded.best_epoch_, loaded.best_val_f1_, loaded.priors_) == (
        detector.best_epoch_, detector.best_val_f1_, detector.priors_
    )


def test_unknown_loss_name_is_a_config_error_listing_the_known_ones():
    with pytest.raises(ConfigError, match="loss='hinge'.*known: ce, weighted_ce, focal, asymmetric, lal, el, lil"):
        create("classifier", loss="hinge")


def test_unknown_loss_parameter_is_a_config_error():
    with pytest.raises(ConfigError, match="'lal'.*temperature.*tau"):
        create("classifier", loss="lal", loss_params={"temperature": 1.0})


@pytest.mark.parametrize("share", [0.0, 1.0, 1.5])
def test_anomaly_share_out_of_range_is_a_config_error(share):
    with pytest.raises(ConfigError, match="classifier: anomaly_share"):
        create("classifier", anomaly_share=share)
