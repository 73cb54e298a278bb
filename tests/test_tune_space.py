"""Search spaces checked against the detectors' options, presets, and `fit --config` / `--preset`."""

import json
import re

import pytest
from typer.testing import CliRunner

import defectmine.pipeline as pipeline
from defectmine.cli import app
from defectmine.errors import ConfigError
from defectmine.models.registry import DETECTORS
from defectmine.pipeline.config import read_config_file
from defectmine.tune import PRESETS, apply_preset, default_space, get_preset, load_space, parse_space
from defectmine.tune.space import trial_params

runner = CliRunner()


@pytest.mark.parametrize("detector", sorted(DETECTORS))
def test_every_detector_has_a_valid_default_space(detector):
    names = {d.name for d in default_space(detector, {"backbone": "cnn"})}
    # padim trains nothing: no learning rate or epochs to search, its features and Gaussians instead
    expected = {"n_features", "ridge", "sigma", "width"} if detector == "padim" else {"lr", "epochs", "width", "augment"}
    assert expected <= names
    assert "width" not in {d.name for d in default_space(detector, {"backbone": "resnet18"})}


def test_the_small_cnns_width_is_searched_only_where_it_is_the_backbone():
    assert "width" in {d.name for d in default_space("fcdd")}  # fcdd's default backbone is the small CNN
    assert "width" not in {d.name for d in default_space("padim")}  # padim's is resnet18


def test_liac_searches_lil_margin_only_with_the_lil_loss():
    assert "loss_params.margin" in {d.name for d in default_space("liac")}
    assert "loss_params.margin" not in {d.name for d in default_space("liac", {"loss": "focal"})}


def test_a_yaml_space_gives_typed_ranges_and_choices(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("lr: {low: 1.0e-4, high: 1.0e-2, log: true}\nepochs: {low: 5, high: 40}\n"
                    "width: [4, 8]\nloss_params.margin: {low: 1, high: 50}\n")
    dims = {d.name: d for d in load_space(path, "classifier")}
    assert dims["lr"].log and not dims["lr"].integer
    assert dims["epochs"].integer and dims["width"].choices == (4, 8)
    assert not dims["loss_params.margin"].integer  # a key of a dict option: a float range
    json_path = tmp_path / "space.json"
    json_path.write_text(json.dumps({"lr": {"low": 0.001, "high": 0.01}}))
    assert [d.name for d in load_space(json_path, "fcdd")] == ["lr"]


@pytest.mark.parametrize("entries, message", [
    ({"lrate": {"low": 1, "high": 2}}, "fcdd has no option 'lrate'.*known options: .*lr"),
    ({"seed": [0, 1]}, "has no option 'seed'"),  # the tuner's own seed is not searched
    ({"epochs": {"low": 1.5, "high": 4}}, "epochs.*must be a whole number"),
    ({"augment": {"low": 0, "high": 1}}, "augment.*must be true or false"),
    ({"lr": {"low": 0.1, "high": 0.01}}, "low=0.1 must be below high=0.01"),
    ({"lr": {"low": 0, "high": 0.01, "log": True}}, "log range needs low > 0"),
    ({"lr": 0.001}, "give a range"),
    ({"lr": {"low": 1e-4, "high": 1e-2, "step": 2}}, "give a range"),
    ({"width": []}, "empty list"),
    ({"lr.x": [1, 2]}, "lr is not a dict option"),
    ([], "expected a mapping"),
])
def test_bad_space_entries_are_one_config_error_naming_the_entry(entries, message):
    with pytest.raises(ConfigError, match=message):
        parse_space("fcdd", entries, "--space s.yaml")


def test_unreadable_and_missing_space_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: {low: 1\n")
    with pytest.raises(ConfigError, match=r"--space .*bad.yaml: cannot be read as YAML"):
        load_space(bad, "fcdd")
    with pytest.raises(ConfigError, match="no such file"):
        load_space(tmp_path / "none.json", "fcdd")


def test_trial_params_set_keys_of_dict_options_without_touching_the_base():
    dims = parse_space("liac", {"lr": [0.01], "loss_params.margin": [5.0]}, "t")
    base = {"lr": 0.001, "loss_params": {"priors": [0.5, 0.5]}}
    params = trial_params(dims, {"lr": 0.01, "loss_params.margin": 5.0}, base)
    assert params == {"lr": 0.01, "loss_params": {"priors": [0.5, 0.5], "margin": 5.0}}
    assert base == {"lr": 0.001, "loss_params": {"priors": [0.5, 0.5]}}


# -- presets -----------------------------------------------------------------------------------------
def test_presets_are_named_in_one_place_and_apply_except_where_kept():
    quality = get_preset("quality")
    assert quality is PRESETS["quality"] and not quality.measured
    settings = {"detector": "fcdd", "detector_params": {"epochs": 25, "lr": 0.002}}
    applied = apply_preset(settings, "quality")
    assert applied["detector_params"]["epochs"] == quality.detector_params["fcdd"]["epochs"]
    assert applied["detector_params"]["lr"] == 0.002 and settings["detector_params"]["epochs"] == 25
    assert apply_preset(settings, "quality", keep={"epochs"})["detector_params"]["epochs"] == 25
    with pytest.raises(ConfigError, match="--preset 'fast' is unknown.*quality"):
        get_preset("fast")


# -- fit --config / --preset ------------------------------------------------------------------------
@pytest.fixture
def captured(monkeypatch):
    """fit's RunConfig, caught before anything is fitted."""
    seen = []

    def fake_fit_run(config, out, overwrite=False):
        seen.append(config)
        raise ConfigError("stopped by the test")

    monkeypatch.setattr(pipeline, "fit_run", fake_fit_run)
    return seen


def _fit(*args):
    return runner.invoke(app, ["fit", *[str(a) for a in args]])


def test_fit_preset_fills_options_that_were_not_typed(captured, tmp_path):
    _fit("--data", tmp_path, "--preset", "quality", "--out", tmp_path / "r")
    _fit("--data", tmp_path, "--preset", "quality", "--epochs", "3", "-p", "width=4", "--out", tmp_path / "r")
    preset = PRESETS["quality"].detector_params["fcdd"]
    assert captured[0].detector_params["epochs"] == preset["epochs"]
    assert captured[0].detector_params["width"] == preset["width"]
    assert captured[1].detector_params["epochs"] == 3 and captured[1].detector_params["width"] == 4


def test_fit_config_takes_the_file_and_typed_options_override_it(captured, tmp_path):
    config = tmp_path / "best_config.json"
    config.write_text(json.dumps({"run": {"data": str(tmp_path), "detector": "liac", "image_size": 64,
                                          "detector_params": {"lr": 0.003, "epochs": 7}, "k": 5}}))
    _fit("--config", config, "--out", tmp_path / "r")
    _fit("--config", config, "--epochs", "2", "--image-size", "32", "-p", "lr=0.01", "--out", tmp_path / "r")
    first, second = captured
    assert (first.detector, first.image_size, first.k) == ("liac", 64, 5)
    assert first.detector_params == {"lr": 0.003, "epochs": 7}
    assert (second.detector, second.image_size, second.k) == ("liac", 32, 5)
    assert second.detector_params == {"lr": 0.01, "epochs": 2}


@pytest.mark.parametrize("content, message", [
    ('{"data": "x", "epochs": 3}', r"unknown field\(s\) epochs; known fields: data"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
])
def test_bad_config_files_are_one_line(tmp_path, content, message):
    config = tmp_path / "c.json"
    config.write_text(content)
    result = _fit("--config", config, "--out", tmp_path / "r")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert re.search(message, result.output), result.output
    with pytest.raises(ConfigError, match="no such file"):
        read_config_file(tmp_path / "none.json")
