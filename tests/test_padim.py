"""PaDiM: per-position Gaussians of frozen features (the contract itself is in test_detectors.py)."""

import numpy as np
import pytest
import torch

from defectmine.cli.options import DEFAULT_EPOCHS, MODEL_OPTIONS, ModelOptions
from defectmine.data.dataset import ImageDataset
from defectmine.data.images import ImageSpec, normalise
from defectmine.errors import ConfigError
from defectmine.models.registry import create

SPEC = ImageSpec(size=(32, 32), channels=1)


def _textured(n: int, seed: int) -> torch.Tensor:
    """Smooth random texture: normal images of one kind, so a bright square is out of place."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(n, 1, 8, 8, generator=generator)
    smooth = torch.nn.functional.interpolate(noise, size=(32, 32), mode="bilinear", align_corners=False)
    return (60 + 80 * smooth).to(torch.uint8)


@pytest.fixture(scope="module")
def fitted():
    normal = ImageDataset.from_tensor(_textured(48, 0), SPEC)
    return create("padim", backbone="cnn", width=8, n_features=24, device="cpu", quiet=True).fit(normal)


def test_gaussians_are_the_mean_and_ridged_covariance_of_the_normal_features(fitted):
    pixels = _textured(48, 0)
    with torch.no_grad():
        features = fitted.network_.features(normalise(pixels, SPEC)).double().numpy()  # (N, P, D)
    position = 5
    expected_mean = features[:, position].mean(0)
    expected_cov = np.cov(features[:, position], rowvar=False) + 0.01 * np.eye(features.shape[2])
    np.testing.assert_allclose(fitted.network_.mean[position].numpy(), expected_mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.linalg.inv(fitted.network_.precision[position].double().numpy()), expected_cov,
                               rtol=1e-3, atol=1e-4)


def test_the_map_is_the_mahalanobis_distance_and_peaks_on_a_defect(fitted):
    defective = _textured(4, 1)
    defective[:, :, 20:26, 6:12] = 255
    net = fitted.network_
    with torch.no_grad():
        distances = net(normalise(defective, SPEC))
        features = net.features(normalise(defective, SPEC))
    centred = (features[0, 7] - net.mean[7]).double()
    expected = torch.sqrt(centred @ net.precision[7].double() @ centred)
    assert distances[0].flatten()[7].item() == pytest.approx(expected.item(), rel=1e-4)
    maps = fitted.score(defective).maps
    peak_rows, peak_cols = np.unravel_index(maps.reshape(4, -1).argmax(1), maps.shape[1:])
    assert np.all((peak_rows >= 16) & (peak_rows < 30) & (peak_cols >= 2) & (peak_cols < 16))
    normal_scores = fitted.score(_textured(8, 2), maps=False).image
    assert fitted.score(defective, maps=False).image.min() > normal_scores.max()


def test_the_same_seed_gives_the_same_model_and_another_seed_another():
    normal = ImageDataset.from_tensor(_textured(16, 0), SPEC)
    params = {"backbone": "cnn", "width": 4, "n_features": 8, "device": "cpu", "quiet": True}
    first, again = (create("padim", **params).fit(normal) for _ in range(2))
    other = create("padim", seed=1, **params).fit(normal)
    test = _textured(4, 3)
    np.testing.assert_array_equal(first.score(test).image, again.score(test).image)
    assert not np.allclose(first.score(test).image, other.score(test).image)


def test_labelled_anomalies_are_not_used_and_a_warning_says_so():
    normal = ImageDataset.from_tensor(_textured(16, 0), SPEC)
    anomalous = ImageDataset.from_tensor(_textured(2, 4), SPEC, labels=[1, 1])
    params = {"backbone": "cnn", "width": 4, "n_features": 8, "device": "cpu", "quiet": True}
    with pytest.warns(UserWarning, match="normal images only: the 2 labelled anomalies are not used"):
        with_labels = create("padim", **params).fit(normal, anomalous)
    without = create("padim", **params).fit(normal)
    test = _textured(4, 3)
    np.testing.assert_array_equal(with_labels.score(test).image, without.score(test).image)


@pytest.mark.parametrize("params, message", [
    ({"layers": [2, 1]}, "distinct and increasing"),
    ({"layers": []}, "non-empty list"),
    ({"n_features": 0}, "n_features=0"),
    ({"ridge": 0.0}, "ridge=0.0 must be positive"),
    ({"sigma": -1.0}, "sigma=-1.0"),
    ({"epochs": 5}, "unknown option.*epochs"),
])
def test_bad_options_are_one_clear_error(params, message):
    with pytest.raises(ConfigError, match=message):
        create("padim", **params)


def _options(**typed) -> ModelOptions:
    defaults = {name: option.default for name, (_, option) in MODEL_OPTIONS.items()}
    return ModelOptions(**{**defaults, "data": "x", "param": [], **typed})


def test_command_line_defaults_leave_each_detector_its_own_backbone_and_epochs():
    padim = _options(detector="padim").settings()["detector_params"]
    assert "backbone" not in padim and "epochs" not in padim  # resnet18, no training
    fcdd = _options(detector="fcdd").settings()["detector_params"]
    assert fcdd["epochs"] == DEFAULT_EPOCHS and "backbone" not in fcdd  # fcdd's own default is the small CNN
    assert create("fcdd").config.backbone == "cnn"
    typed = _options(detector="padim", backbone="cnn", epochs=3).settings()["detector_params"]
    assert typed["backbone"] == "cnn" and typed["epochs"] == 3  # and create() then names epochs as unknown


def test_fit_and_predict_from_the_command_line_and_a_typed_epochs_is_one_clear_line(synthetic_folder, tmp_path):
    from typer.testing import CliRunner

    from defectmine.cli import app
    from defectmine.models.registry import load_detector

    runner = CliRunner()
    run = tmp_path / "run"
    result = runner.invoke(app, ["fit", "--data", str(synthetic_folder), "--detector", "padim", "--k", "0",
                                 "--image-size", "32", "--device", "cpu", "--out", str(run), "--quiet"])
    assert result.exit_code == 0, result.output
    model = load_detector(run / "model")
    assert model.config.backbone == "resnet18"  # its own default: --backbone was not typed
    assert (run / "metrics.json").is_file() and (run / "report.html").is_file()
    predicted = runner.invoke(app, ["predict", "--model", str(run / "model"), "--data", str(synthetic_folder),
                                    "--out", str(tmp_path / "predicted"), "--quiet"])
    assert predicted.exit_code == 0, predicted.output
    assert (tmp_path / "predicted" / "scores.csv").is_file()
    typed = runner.invoke(app, ["fit", "--data", str(synthetic_folder), "--detector", "padim", "--epochs", "3",
                                "--image-size", "32", "--out", str(tmp_path / "other"), "--quiet"])
    assert typed.exit_code != 0 and "unknown option(s) epochs" in typed.output
    assert not (tmp_path / "other").exists()


def test_pretrain_epochs_fits_the_gaussians_on_features_pretrained_on_the_normal_images(tmp_path):
    from defectmine.models.registry import load_detector

    normal = ImageDataset.from_tensor(_textured(24, 0), SPEC)
    params = {"backbone": "cnn", "width": 4, "n_features": 8, "device": "cpu", "quiet": True}
    random_features = create("padim", **params).fit(normal)
    pretrained = create("padim", pretrain_epochs=1, **params).fit(normal)
    random_state, pretrained_state = random_features.network_.encoder.state_dict(), pretrained.network_.encoder.state_dict()
    assert random_state.keys() == pretrained_state.keys()
    assert any(not torch.equal(random_state[k], pretrained_state[k]) for k in random_state)
    test = _textured(4, 3)
    pretrained.save(tmp_path / "model")
    np.testing.assert_allclose(load_detector(tmp_path / "model").score(test).image, pretrained.score(test).image, rtol=1e-5)
    with pytest.raises(ConfigError, match="pretrain_epochs=-1"):
        create("padim", pretrain_epochs=-1)


def _weights_file(path, seed: int):
    """A small CNN's weights, as our pretraining writes them (a state dict in safetensors)."""
    from safetensors.torch import save_file

    from defectmine.backbones import build_encoder

    torch.manual_seed(seed)
    encoder = build_encoder("cnn", 1, width=4)
    save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, str(path))
    return str(path)


def test_a_list_of_weights_files_is_an_ensemble_with_one_member_per_file(tmp_path):
    from defectmine.models.registry import load_detector

    files = [_weights_file(tmp_path / f"w{seed}.safetensors", seed) for seed in (10, 11)]
    normal = ImageDataset.from_tensor(_textured(16, 0), SPEC)
    params = {"backbone": "cnn", "width": 4, "n_features": 8, "device": "cpu", "quiet": True}
    both = create("padim", backbone_weights=files, **params)
    assert both.config.ensemble == 2
    both.fit(normal)
    singles = [create("padim", backbone_weights=f, seed=i, **params).fit(normal) for i, f in enumerate(files)]
    for member, single in zip(both.members_, singles):
        assert member.config.backbone_weights == single.config.backbone_weights
        for key, value in single.network_.state_dict().items():
            assert torch.equal(member.network_.state_dict()[key], value), key
    test = _textured(4, 3)
    both.save(tmp_path / "model")
    np.testing.assert_allclose(load_detector(tmp_path / "model").score(test).image, both.score(test).image, rtol=1e-5)
    assert create("padim", backbone_weights=files[:1]).config.backbone_weights == files[0]


def test_a_list_of_weights_files_from_the_command_line(synthetic_folder, tmp_path):
    import json

    from typer.testing import CliRunner

    from defectmine.cli import app
    from defectmine.models.registry import load_detector

    files = [_weights_file(tmp_path / f"w{seed}.safetensors", seed) for seed in (10, 11)]
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["fit", "--data", str(synthetic_folder), "--detector", "padim", "--k", "0",
                                      "--backbone", "cnn", "-p", "width=4", "-p", f"backbone_weights={json.dumps(files)}",
                                      "--image-size", "32", "--device", "cpu", "--out", str(run), "--quiet"])
    assert result.exit_code == 0, result.output
    model = load_detector(run / "model")
    assert model.config.ensemble == 2 and len(model.members_) == 2


@pytest.mark.parametrize("params, message", [
    ({"backbone_weights": []}, "non-empty list"),
    ({"backbone_weights": ["a.safetensors", 3]}, "non-empty list"),
    ({"backbone_weights": ["a.safetensors", "b.safetensors"], "ensemble": 3}, "ensemble of 2, but ensemble=3"),
])
def test_bad_lists_of_weights_files_are_one_clear_error(params, message):
    with pytest.raises(ConfigError, match=message):
        create("padim", **params)
