"""FCDD's `tile` option: an image scores by its most anomalous window and trains on it (multiple-
instance; normal images on the whole map with tile_normals="map"); the whole-map mean stays the default."""

import numpy as np
import pytest
import torch

from defectmine.data.dataset import ImageDataset
from defectmine.data.images import ImageSpec, normalise
from defectmine.errors import ConfigError
from defectmine.models.fcdd import tiled_scores
from defectmine.models.losses import fcdd_loss
from defectmine.models.registry import create, load_detector

FAST = {"device": "cpu", "quiet": True, "epochs": 2, "batch_size": 8, "width": 4}


def test_tiled_scores_by_hand():
    heat = torch.zeros(1, 4, 4)
    heat[0, 1, 2] = 8.0  # one hot cell of a 4x4 map of a 32x32 image (stride 8)
    assert float(tiled_scores(heat, (32, 32), None)) == pytest.approx(8.0 / 16)  # the paper's mean
    assert float(tiled_scores(heat, (32, 32), 16)) == pytest.approx(8.0 / 4)  # the best 2x2 window
    assert float(tiled_scores(heat, (32, 32), 8)) == pytest.approx(8.0)  # one cell: the map's maximum
    assert float(tiled_scores(heat, (32, 32), 32)) == pytest.approx(8.0 / 16)  # the whole image: the mean
    # a 2x6 map of a 16x48 image at tile 24: 3x3-cell windows, cut to the map's 2 rows
    wide = torch.arange(12.0).view(1, 2, 6)
    assert float(tiled_scores(wide, (16, 48), 24)) == pytest.approx((3 + 4 + 5 + 9 + 10 + 11) / 6)


def test_anomalous_scores_replace_the_mean_in_the_anomalous_term_only():
    heat = torch.full((2, 4, 4), 0.5)
    labels = torch.tensor([0.0, 1.0])
    windows = torch.tensor([3.0, 2.0])
    plain = fcdd_loss(heat, labels)
    tiled = fcdd_loss(heat, labels, anomalous_scores=windows)
    # normal: mean H = 0.5 either way; anomalous: -log(1 - exp(-s)), s = 0.5 vs the window's 2.0
    assert float(plain) == pytest.approx((0.5 - np.log(1 - np.exp(-0.5))) / 2)
    assert float(tiled) == pytest.approx((0.5 - np.log(1 - np.exp(-2.0))) / 2)
    both = fcdd_loss(heat, labels, anomalous_scores=windows, normal_scores=windows)
    assert float(both) == pytest.approx((3.0 - np.log(1 - np.exp(-2.0))) / 2)  # the normal image pays its window


@pytest.mark.parametrize("params", [{"tile": 0}, {"tile": -8}, {"tile": 2.5}, {"tile": "big"}, {"tile": True},
                                    {"tile": 8, "tile_normals": "mean"}])
def test_bad_tiles_are_named(params):
    with pytest.raises(ConfigError, match="tile"):
        create("fcdd", **params)


def test_a_tile_larger_than_the_images_is_refused_before_training(tiny_training_sets):
    normal, anomalous = tiny_training_sets
    with pytest.raises(ConfigError, match="tile=32 px is larger than the 16x16 images"):
        create("fcdd", tile=32, **FAST).fit(normal, anomalous)


def test_a_tiled_fcdd_scores_its_best_window_and_survives_save_and_load(tiny_training_sets, tmp_path):
    normal, anomalous = tiny_training_sets
    detector = create("fcdd", tile=8, **FAST).fit(normal, anomalous)
    pixels = torch.cat([normal.raw_images()[:4], anomalous.raw_images()])
    scores = detector.score(pixels)
    with torch.no_grad():
        heat = detector.network_(normalise(pixels, normal.spec))
    expected = tiled_scores(heat, (16, 16), 8).numpy()
    np.testing.assert_allclose(scores.image, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(scores.image, heat.flatten(1).mean(1).numpy())  # not the whole-map mean
    detector.save(tmp_path / "tiled")
    loaded = load_detector(tmp_path / "tiled")
    assert loaded.config.tile == 8
    np.testing.assert_allclose(loaded.score(pixels).image, scores.image, rtol=1e-5)


def test_images_train_on_their_highest_window(monkeypatch, tiny_training_sets):
    import defectmine.models.fcdd as fcdd

    seen = []
    real = fcdd.fcdd_loss

    def spy(heat, labels, eps=1e-9, **scores):
        seen.append(scores)
        return real(heat, labels, eps, **scores)

    monkeypatch.setattr(fcdd, "fcdd_loss", spy)
    normal, anomalous = tiny_training_sets
    create("fcdd", tile=8, **FAST).fit(normal, anomalous)
    assert seen and all(s["anomalous_scores"] is s["normal_scores"] is not None for s in seen)
    seen.clear()
    create("fcdd", tile=8, tile_normals="map", **FAST).fit(normal, anomalous)
    assert seen and all(s["anomalous_scores"] is not None and s["normal_scores"] is None for s in seen)
    seen.clear()
    create("fcdd", **FAST).fit(normal, anomalous)
    assert seen and all(not s for s in seen)  # untiled: the paper's loss, unchanged


def test_a_tiled_fcdd_exports_with_its_window_scores(tmp_path):
    pytest.importorskip("onnxruntime")
    from defectmine.export import export_model, load_exported

    spec = ImageSpec(size=(32, 32), channels=1)
    normal = ImageDataset.from_tensor(
        torch.randint(0, 255, (16, 1, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)), spec)
    detector = create("fcdd", tile=16, **FAST).fit(normal)
    detector.save(tmp_path / "m")
    result = export_model(tmp_path / "m", format="onnx")
    assert result.info.parity_max_abs_diff <= 1e-4
    pixels = np.random.default_rng(3).integers(0, 256, (3, 1, 32, 32), dtype=np.uint8)
    np.testing.assert_allclose(load_exported(result.path).score(pixels).image,
                               detector.score(torch.from_numpy(pixels)).image, atol=1e-4, rtol=0)
