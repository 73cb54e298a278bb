"""The training levers of the gradient-trained detectors: augment, optimizer, warmup_epochs, ema, tta, drop_path."""

import numpy as np
import pytest
import torch

from defectmine.backbones import build_backbone
from defectmine.errors import ConfigError
from defectmine.models.augment import (
    AUGMENTATIONS, augment_images, augment_parts, random_affine, random_color, random_cutout, random_rot90,
)
from defectmine.models.optim import WeightAverage, make_optimizer
from defectmine.models.registry import create, load_detector

def _batch(n=8, size=(16, 16), channels=1, seed=0):
    return torch.randint(0, 256, (n, channels, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def sets(tiny_training_sets):
    return tiny_training_sets


def _fcdd_scores(sets, **params):
    normal, anomalous = sets
    detector = create("fcdd", epochs=2, width=4, batch_size=4, device="cpu", quiet=True, **params)
    return detector.fit(normal, anomalous), detector


# --- augment ---------------------------------------------------------------------------------------------

def test_augment_parts_accepts_bools_names_and_joined_sets():
    assert augment_parts(True) == augment_parts("flips") == ("flips",)
    assert augment_parts(False) == augment_parts("none") == ()
    assert augment_parts("all") == AUGMENTATIONS
    assert augment_parts("cutout+flips") == ("flips", "cutout")  # applied in a fixed order


def test_unknown_augment_part_names_it_and_the_known_ones():
    with pytest.raises(ConfigError, match="'spin'.*flips, rot90, affine, color, cutout"):
        create("fcdd", augment="flips+spin")


def test_augment_true_and_flips_give_the_same_fit_and_none_differs(sets):
    # pins the default path: augment=True draws exactly what "flips" draws
    flips_true = _fcdd_scores(sets, augment=True)[0].score(sets[0]).image
    flips_named = _fcdd_scores(sets, augment="flips")[0].score(sets[0]).image
    none = _fcdd_scores(sets, augment="none")[0].score(sets[0]).image
    np.testing.assert_array_equal(flips_true, flips_named)
    np.testing.assert_array_equal(none, _fcdd_scores(sets, augment=False)[0].score(sets[0]).image)
    assert not np.allclose(flips_true, none)


def test_rot90_permutes_square_images_and_skips_non_square():
    images = _batch()
    turned = random_rot90(images, torch.Generator().manual_seed(0))
    assert not torch.equal(turned, images)
    for before, after in zip(images, turned):
        assert any(torch.equal(after, torch.rot90(before, k, dims=(-2, -1))) for k in range(4))
    wide = _batch(size=(8, 16))
    assert torch.equal(random_rot90(wide, torch.Generator().manual_seed(0)), wide)


def test_affine_color_and_cutout_keep_shape_and_dtype_and_change_pixels():
    images = _batch(channels=3)
    for function in (random_affine, random_color, random_cutout):
        out = function(images, torch.Generator().manual_seed(1))
        assert out.shape == images.shape and out.dtype == torch.uint8
        assert not torch.equal(out, images), function.__name__


def test_color_stays_near_the_input_and_in_range():
    images = torch.full((16, 1, 8, 8), 250, dtype=torch.uint8)
    out = random_color(images, torch.Generator().manual_seed(0)).float()
    assert out.max() <= 255 and (out - 250).abs().max() <= 0.1 * 255 + 1  # brightness +-0.1, flat image


def test_cutout_fills_one_eighth_square_with_the_mean_in_about_half_the_images():
    images = torch.zeros(200, 1, 32, 32, dtype=torch.uint8)
    images[:, :, :, 16:] = 200  # mean 100, never present in the image itself
    out = random_cutout(images, torch.Generator().manual_seed(0))
    filled = (out == 100).flatten(1).sum(dim=1)
    assert set(filled.tolist()) == {0, 16}  # one 4 x 4 square (32 / 8) or nothing
    assert 70 < int((filled > 0).sum()) < 130


def test_augment_images_repeats_under_a_seed():
    images = _batch()
    first = augment_images(images, augment_parts("all"), torch.Generator().manual_seed(3))
    again = augment_images(images, augment_parts("all"), torch.Generator().manual_seed(3))
    assert torch.equal(first, again)


# --- optimizer and warm-up -------------------------------------------------------------------------------

def test_make_optimizer_kinds():
    network = torch.nn.Linear(2, 1)
    sgd, _ = make_optimizer(network, lr=0.1, weight_decay=0.0, epochs=3, optimizer="sgd")
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.9
    assert isinstance(make_optimizer(network, lr=0.1, weight_decay=0.0, epochs=3, optimizer="adamw")[0],
                      torch.optim.AdamW)
    assert type(make_optimizer(network, lr=0.1, weight_decay=0.0, epochs=3)[0]) is torch.optim.Adam


def test_warmup_ramps_the_learning_rate_then_follows_the_cosine():
    optimizer, scheduler = make_optimizer(torch.nn.Linear(2, 1), lr=1.0, weight_decay=0.0, epochs=6, warmup_epochs=2)
    rates = []
    for _ in range(6):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    np.testing.assert_allclose(rates[:3], [1 / 3, 2 / 3, 1.0], rtol=1e-6)
    assert rates[3] < rates[2] and rates[5] < rates[4] < rates[3]


def test_other_optimizers_change_the_fit(sets):
    adam = _fcdd_scores(sets)[0].score(sets[0]).image
    for params in ({"optimizer": "sgd"}, {"optimizer": "adamw", "weight_decay": 0.05}, {"warmup_epochs": 1}):
        assert not np.allclose(adam, _fcdd_scores(sets, **params)[0].score(sets[0]).image), params


# --- EMA -------------------------------------------------------------------------------------------------

def test_weight_average_lags_the_weights_and_copies_buffers():
    network = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    average = WeightAverage(network, 0.9)
    for _ in range(5):
        with torch.no_grad():
            network[0].weight.add_(1.0)
        network(torch.randn(4, 2))  # moves the batch-norm statistics
        average.update(network)
    assert not torch.allclose(average.state["0.weight"], network[0].weight)
    assert torch.equal(average.state["1.running_mean"], network[1].running_mean)
    with average.swapped_in(network):
        assert torch.equal(network[0].weight, average.state["0.weight"])
    assert not torch.equal(network[0].weight, average.state["0.weight"])  # own weights are back


def test_ema_fit_keeps_the_averaged_weights(sets):
    raw = _fcdd_scores(sets)[1].network_.state_dict()
    averaged = _fcdd_scores(sets, ema=0.99)[1].network_.state_dict()
    assert any(not torch.equal(raw[key], averaged[key]) for key in raw)


# --- TTA -------------------------------------------------------------------------------------------------

def test_tta_scores_are_flip_invariant_and_maps_have_the_input_size(sets):
    detector = _fcdd_scores(sets)[0]
    images = sets[0].raw_images()[:4]
    plain = detector.score(images)
    detector.config.tta = True
    scores = detector.score(images)
    flipped = detector.score(images.flip(-1))
    assert scores.maps.shape == (4, 16, 16)
    assert not np.allclose(scores.image, plain.image)
    np.testing.assert_allclose(flipped.image, scores.image, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(flipped.maps, scores.maps[..., ::-1], rtol=1e-4, atol=1e-5)


def test_save_load_keeps_the_levers(sets, tmp_path):
    detector = _fcdd_scores(sets, augment="flips+rot90", optimizer="adamw", warmup_epochs=1, ema=0.9, tta=True)[0]
    detector.save(tmp_path / "model")
    loaded = load_detector(tmp_path / "model")
    assert loaded.config.augment == "flips+rot90" and loaded.config.tta and loaded.config.ema == 0.9
    np.testing.assert_allclose(loaded.score(sets[0]).image, detector.score(sets[0]).image, rtol=1e-5)


# --- drop_path -------------------------------------------------------------------------------------------

def test_drop_path_reaches_timm_backbones():
    from timm.layers import DropPath

    backbone = build_backbone("resnet18", 1, stride=8, drop_path=0.2)
    rates = [m.drop_prob for m in backbone.module.modules() if isinstance(m, DropPath)]
    assert rates and max(rates) > 0
    plain = build_backbone("resnet18", 1, stride=8)
    assert not any(isinstance(m, DropPath) for m in plain.module.modules())


# --- bad values ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("params,message", [
    ({"augment": "spin"}, "augment"),
    ({"augment": 3}, "augment"),
    ({"optimizer": "lamb"}, "optimizer='lamb'"),
    ({"warmup_epochs": 5, "epochs": 5}, "warmup_epochs=5"),
    ({"warmup_epochs": -1}, "warmup_epochs=-1"),
    ({"ema": 1.0}, "ema=1.0"),
    ({"ema": 0.0}, "ema=0.0"),
    ({"drop_path": 0.1}, "drop_path=0.1.*residual"),
    ({"drop_path": 1.5, "backbone": "resnet18"}, "drop_path=1.5"),
])
def test_bad_lever_values_raise_one_config_error(params, message):
    with pytest.raises(ConfigError, match=message):
        create("fcdd", **params)


def test_segdec_refuses_drop_path():
    with pytest.raises(ConfigError, match="segdec: drop_path"):
        create("segdec", backbone="resnet18", drop_path=0.1)


@pytest.mark.slow
def test_tta_detectors_export_with_the_checkpoints_flip_averaged_scores(tmp_path):
    pytest.importorskip("onnxruntime")
    from defectmine.export import export_model, load_exported
    from test_export import _pixels, tiny_model

    folder = tiny_model("fcdd", tmp_path / "fcdd", tta=True)
    result = export_model(folder, format="onnx")
    assert result.info.parity_max_abs_diff <= 1e-4
    pixels = _pixels(3)
    expected = load_detector(folder).score(torch.from_numpy(pixels))
    got = load_exported(result.path).score(pixels)
    np.testing.assert_allclose(got.image, expected.image, atol=1e-4, rtol=0)
    np.testing.assert_allclose(got.maps, expected.maps, atol=1e-4, rtol=0)
