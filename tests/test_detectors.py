"""One contract test for every registered detector (smp's BaseModelTester idea)."""

from dataclasses import fields

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from defectmine.data import ImageDataset, ImageSpec, scan_folder
from defectmine.errors import ConfigError, DataError, NotFittedError
from defectmine.models.registry import DETECTORS, create, load_detector

# Small, fast settings per detector; a new detector adds its entry here.
FAST_PARAMS = {
    "fcdd": {"epochs": 12, "width": 8, "batch_size": 16, "lr": 3e-3, "eval_every": 4},
    "classifier": {"epochs": 12, "width": 8, "stride": 2, "batch_size": 16, "lr": 3e-3, "eval_every": 4},
    "liac": {"epochs": 12, "width": 8, "stride": 2, "batch_size": 16, "lr": 3e-3, "eval_every": 4},
    "segdec": {"epochs": 12, "width": 4, "batch_size": 16, "lr": 3e-3, "eval_every": 4},
    "draem": {"epochs": 20, "width": 4, "depth": 2, "batch_size": 8, "lr": 5e-3, "eval_every": 10},
    "vae_gradcam": {"epochs": 12, "width": 8, "blocks": 3, "batch_size": 16, "lr": 3e-3, "eval_every": 4},
    "padim": {"n_features": 20},
}
SPEC = ImageSpec(size=(32, 32), channels=1)


@pytest.fixture(scope="module")
def tiny_sets(tmp_path_factory):
    from defectmine.data import write_synthetic_folder

    root = write_synthetic_folder(tmp_path_factory.mktemp("synthetic"), n_normal=40, n_anomalous=16, size=32)
    records = scan_folder(root)
    normal = [r for r in records if not r.is_anomalous]
    anomalous = [r for r in records if r.is_anomalous]
    train_anomalous = anomalous[::4]  # 4 labelled, both classes
    held_out = [r for r in anomalous if r not in train_anomalous]
    # model selection sees the val split only; the test split is what the assertions score
    val = [r.with_split("val") for r in normal[28:34] + held_out[::2]]
    test = [r.with_split("test") for r in normal[34:] + held_out[1::2]]
    return {
        "normal": ImageDataset(normal[:28], SPEC),
        "anomalous": ImageDataset(train_anomalous, SPEC),
        "val": ImageDataset(val, SPEC),
        "test": ImageDataset(test, SPEC),
    }


@pytest.fixture(scope="module", params=sorted(DETECTORS))
def fitted(request, tiny_sets):
    detector = create(request.param, device="cpu", quiet=True, seed=0, **FAST_PARAMS.get(request.param, {}))
    return detector.fit(tiny_sets["normal"], tiny_sets["anomalous"], val=tiny_sets["val"])


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_model_selection_refuses_the_test_split(name, tiny_sets):
    one_epoch = {"epochs": 1} if "epochs" in {f.name for f in fields(DETECTORS[name].Config)} else {}  # padim trains nothing
    detector = create(name, device="cpu", quiet=True, **{**FAST_PARAMS.get(name, {}), **one_epoch})
    with pytest.raises(ConfigError, match="validation images only.*'test'"):
        detector.fit(tiny_sets["normal"], tiny_sets["anomalous"], val=tiny_sets["test"])


def test_scores_are_finite_with_maps_at_input_resolution(fitted, tiny_sets):
    scores = fitted.score(tiny_sets["test"])
    n = len(tiny_sets["test"])
    assert scores.image.shape == (n,) and np.isfinite(scores.image).all()
    if scores.maps is not None:
        assert scores.maps.shape == (n, 32, 32) and np.isfinite(scores.maps).all()


def test_obvious_defects_rank_above_normals(fitted, tiny_sets):
    scores = fitted.score(tiny_sets["test"])
    assert roc_auc_score(tiny_sets["test"].labels, scores.image) > 0.85


def test_save_load_gives_the_same_scores(fitted, tiny_sets, tmp_path):
    fitted.save(tmp_path / "model")
    loaded = load_detector(tmp_path / "model")
    before, after = fitted.score(tiny_sets["test"]), loaded.score(tiny_sets["test"])
    np.testing.assert_allclose(before.image, after.image, rtol=1e-5, atol=1e-6)
    assert loaded.get_config() == {**fitted.get_config(), **{k: v for k, v in loaded.get_config().items() if k == "backbone_weights"}}


def test_scoring_a_uint8_tensor_matches_the_dataset(fitted, tiny_sets):
    via_tensor = fitted.score(tiny_sets["test"].raw_images())
    np.testing.assert_allclose(via_tensor.image, fitted.score(tiny_sets["test"]).image, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_score_before_fit_is_a_clear_error(name, tiny_sets):
    with pytest.raises(NotFittedError, match="before score"):
        create(name).score(tiny_sets["test"])


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_unknown_option_is_named(name):
    with pytest.raises(ConfigError, match="unknown option.*bogus"):
        create(name, bogus=1)


def test_unknown_detector_lists_known_ones():
    with pytest.raises(ConfigError, match="known: .*fcdd"):
        create("nope")


def test_wrong_tensor_shape_is_a_clear_error(fitted):
    with pytest.raises(DataError, match="expected"):
        fitted.score(torch.zeros(2, 3, 16, 16, dtype=torch.uint8))


def test_fit_rejects_anomalies_in_the_normal_set(tiny_sets):
    mixed = ImageDataset(tiny_sets["test"].records, SPEC)
    with pytest.raises(DataError, match="pass those as `anomalous`"):
        create("fcdd", epochs=1, quiet=True).fit(mixed)


def test_fcdd_without_labelled_anomalies_uses_synthetic_ones(tiny_sets):
    detector = create("fcdd", device="cpu", quiet=True, **FAST_PARAMS["fcdd"])
    detector.fit(tiny_sets["normal"])
    assert detector.synthetic_ == "cutpaste"
    scores = detector.score(tiny_sets["test"])
    assert roc_auc_score(tiny_sets["test"].labels, scores.image) > 0.7


def test_fcdd_heatmap_peaks_on_the_defect(fitted, tiny_sets):
    test = tiny_sets["test"]
    scores = fitted.score(test)
    masks = test.masks()
    anomalous = [i for i in range(len(test)) if masks[i].any()]
    inside = np.mean([scores.maps[i][masks[i]].mean() for i in anomalous])
    outside = np.mean([scores.maps[i][~masks[i]].mean() for i in anomalous])
    assert inside > outside
