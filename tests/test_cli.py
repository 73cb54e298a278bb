"""End-to-end: the CLI on a tiny synthetic folder, and bad input giving one clear line."""

import csv
import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from defectmine.cli import app

runner = CliRunner()
FAST = ["--image-size", "32", "--epochs", "4", "-p", "width=8", "-p", "batch_size=16", "--quiet"]


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory):
    from defectmine.data import write_synthetic_folder

    root = tmp_path_factory.mktemp("cli")
    data = write_synthetic_folder(root / "data", n_normal=30, n_anomalous=12, size=32)
    result = _invoke("fit", "--data", data, "--out", root / "run", "--device", "cpu", *FAST)
    assert result.exit_code == 0, result.output
    return root, data, result


def test_fit_writes_a_complete_run_directory(fitted_run):
    root, _, result = fitted_run
    run = root / "run"
    for name in ("config.json", "split.csv", "metrics.json", "scores.csv", "report.html",
                 "model/config.json", "model/model.safetensors"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["threshold"]["rule"] == "max_f1"
    assert 0.0 <= metrics["test"]["auroc"] <= 1.0
    assert "pixel_auroc" in metrics["test_pixel"]  # the synthetic folder has masks
    config = json.loads((run / "config.json").read_text())
    assert config["environment"]["torch"] and config["run"]["data"].endswith("data")
    assert "auroc" in result.output and "report.html" in result.output
    html = (run / "report.html").read_text()
    assert "<img" in html and "max_f1" in html


def test_split_file_keeps_test_apart_and_threshold_comes_from_val(fitted_run):
    root, _, _ = fitted_run
    with open(root / "run" / "split.csv") as f:
        rows = list(csv.DictReader(f))
    splits = {r["split"] for r in rows}
    assert splits >= {"train", "val", "test"}
    assert len({r["path"] for r in rows}) == len(rows)


def test_predict_writes_scores_and_full_resolution_overlays(fitted_run, tmp_path):
    root, _, _ = fitted_run
    images = tmp_path / "new"
    images.mkdir()
    Image.new("L", (48, 40), 120).save(images / "a.png")
    Image.new("RGB", (20, 30), (10, 200, 30)).save(images / "b.jpg")
    result = _invoke("predict", "--model", root / "run" / "model", "--data", images, "--out", tmp_path / "preds", "-q")
    assert result.exit_code == 0, result.output
    with open(tmp_path / "preds" / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"].split("/")[-1] for r in rows] == ["a.png", "b.jpg"]
    assert all(r["predicted"] in ("normal", "anomalous") for r in rows)  # the run's threshold is used
    overlay = Image.open(tmp_path / "preds" / rows[0]["overlay"])
    assert overlay.size == (48, 40)  # full resolution of the original image


def test_evaluate_with_another_threshold_rule(fitted_run):
    root, _, _ = fitted_run
    result = _invoke("evaluate", root / "run", "--threshold-rule", "mean_std", "--threshold-k", "2", "-q")
    assert result.exit_code == 0, result.output
    metrics = json.loads((root / "run" / "metrics.json").read_text())
    assert metrics["threshold"]["rule"] == "mean_std" and metrics["threshold"]["params"]["k"] == 2
    assert metrics["timing"]["fit_seconds"] > 0  # kept from the fit


def test_missing_folder_is_one_clear_line(tmp_path):
    result = _invoke("fit", "--data", tmp_path / "nowhere", "--out", tmp_path / "run", *FAST)
    assert result.exit_code == 2
    assert "nowhere" in result.output and "Traceback" not in result.output


def test_corrupt_image_is_named_and_skip_bad_goes_on(tmp_path):
    from defectmine.data import write_synthetic_folder

    data = write_synthetic_folder(tmp_path / "data", n_normal=30, n_anomalous=12, size=32)
    bad = data / "normal" / "zz_corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    result = _invoke("fit", "--data", data, "--out", tmp_path / "run", "--device", "cpu", *FAST)
    assert result.exit_code == 2 and "zz_corrupt.png" in result.output and "--skip-bad" in result.output
    result = _invoke("fit", "--data", data, "--out", tmp_path / "run", "--device", "cpu", "--skip-bad", *FAST)
    assert result.exit_code == 0, result.output
    skipped = json.loads((tmp_path / "run" / "metrics.json").read_text())["skipped_files"]
    assert [Path(s["path"]).name for s in skipped] == ["zz_corrupt.png"] and skipped[0]["reason"]


def test_unknown_detector_and_bad_param(tmp_path):
    from defectmine.data import write_synthetic_folder

    data = write_synthetic_folder(tmp_path / "data")
    result = _invoke("fit", "--data", data, "--detector", "nope", "--out", tmp_path / "r", *FAST)
    assert result.exit_code == 2 and "unknown detector 'nope'" in result.output
    result = _invoke("fit", "--data", data, "--out", tmp_path / "r", "-p", "colour=blue", *FAST)
    assert result.exit_code == 2 and "colour" in result.output


def test_help_shows_examples():
    result = _invoke("fit", "--help")
    assert result.exit_code == 0 and "defectmine fit --data" in result.output


def test_pretrain_then_fit_with_our_weights(tmp_path):
    from defectmine.data import write_synthetic_folder

    data = write_synthetic_folder(tmp_path / "data", n_normal=30, n_anomalous=12, size=32)
    result = _invoke("pretrain", "--data", data, "--out", tmp_path / "ours", "--epochs", "1",
                     "--image-size", "32", "--device", "cpu", "-q")
    assert result.exit_code == 0, result.output
    weights = tmp_path / "ours" / "backbone.safetensors"
    assert weights.is_file() and (tmp_path / "ours" / "pretrain.json").is_file()
    result = _invoke("fit", "--data", data, "--out", tmp_path / "run", "--device", "cpu",
                     "--backbone-weights", weights, *FAST)
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["detector"]["config"]["backbone_weights"] == str(weights)
    assert config["detector"]["config"]["freeze_backbone"] is False  # fine-tuning unless asked

    result = _invoke("fit", "--data", data, "--out", tmp_path / "frozen", "--device", "cpu",
                     "--backbone-weights", weights, "--freeze-backbone", *FAST)
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "frozen" / "config.json").read_text())
    assert config["detector"]["config"]["freeze_backbone"] is True


def test_pretrain_unknown_method_is_one_clear_line(tmp_path):
    from defectmine.data import write_synthetic_folder

    data = write_synthetic_folder(tmp_path / "data")
    result = _invoke("pretrain", "--data", data, "--out", tmp_path / "o", "--method", "magic", "-q")
    assert result.exit_code == 2 and "magic" in result.output


def test_elpv_without_shared_split_files_falls_back_to_the_protocol(monkeypatch):
    import defectmine.pipeline.data as pipeline_data
    from defectmine.data import Split
    from defectmine.errors import DataError

    def missing(name):
        raise DataError("shared/ not found.")

    monkeypatch.setattr(pipeline_data, "fixed_split", missing)
    with pytest.warns(UserWarning, match="protocol"):
        records = pipeline_data.load_records("elpv")
    counts = Split.from_records(records).counts()
    assert counts["train"] == 905 and counts["train_anomalous"] == 80
    assert counts["val_normal"] + counts["test_normal"] == 603


def _command_names():
    import typer.main

    return [None, *typer.main.get_command(app).commands]


@pytest.mark.parametrize("name", _command_names())
def test_help_in_80_columns_shows_every_option_name_whole(name):
    import re

    import typer.main

    group = typer.main.get_command(app)
    command = group if name is None else group.commands[name]
    args = ["--help"] if name is None else [name, "--help"]
    result = runner.invoke(app, args, terminal_width=80, env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
    assert result.exit_code == 0, result.output
    text = result.output
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    options = [o for p in command.params if p.param_type_name == "option" for o in (*p.opts, *p.secondary_opts)]
    assert "--help" in text and (name != "fit" or "--backbone-weights" in options)
    for option in options:
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text), f"{option} is cut in `{name} --help`"
    if name is None:  # the command list names every command
        for command_name in group.commands:
            assert re.search(rf"^\s+{command_name}\s", text, re.M), command_name
