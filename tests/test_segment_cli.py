"""`defectmine segment fit | predict | evaluate` end to end on a tiny synthetic folder with two defect
classes and masks, and bad input giving one clear line."""

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from defectmine.cli import app

runner = CliRunner()
FAST = ["--encoder", "cnn", "--epochs", "2", "--image-size", "32", "--device", "cpu", "-p", "batch_size=8", "-q"]


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    from defectmine.data import write_synthetic_folder

    root = tmp_path_factory.mktemp("segcli")
    data = write_synthetic_folder(root / "data", n_normal=24, n_anomalous=18, size=32)
    result = _invoke("segment", "fit", "--data", data, "--out", root / "run", *FAST)
    assert result.exit_code == 0, result.output
    return root, data, result


def _one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.output.startswith("error:"), result.output
    assert len(result.output.strip().splitlines()) <= 3, result.output  # one message (wrapped at most)
    for fragment in fragments:
        assert fragment in result.output, result.output


def test_fit_writes_a_complete_run_folder_with_per_class_metrics(fitted):
    root, _, result = fitted
    run = root / "run"
    for name in ("config.json", "split.csv", "metrics.json", "scores.csv", "report.html",
                 "model/config.json", "model/model.safetensors"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    test = metrics["segmentation"]["test"]
    assert set(test["per_class"]) == {"scratch", "spot"}
    for values in test["per_class"].values():
        assert 0.0 <= values["iou"] <= 1.0 and values["pixels"] > 0
    assert {"mean_iou", "mean_dice", "pooled_iou", "defective_pooled_iou"} <= set(test)
    assert 0.0 <= metrics["test"]["auroc"] <= 1.0 and metrics["threshold"]["rule"] == "max_f1"
    assert 0 < metrics["pixel_threshold"] < 1 and metrics["training"]["injection"].startswith("DynamicLabelInjection")
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "segment" and config["run"]["encoder"] == "cnn" and config["run"]["injection"] is True
    assert set(config["integrity"]) == {"fingerprint", "split_sha256", "weights_sha256"}
    with open(run / "split.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["split"] for r in rows} >= {"train", "val", "test"}
    assert not any(r["path"].startswith("/") for r in rows)  # relative to the data root
    assert "scratch" in result.output and "pooled_iou" in result.output
    assert "<img" in (run / "report.html").read_text()


def test_predict_writes_palette_masks_of_class_indices_and_areas(fitted, tmp_path):
    from defectmine.data import ImageDataset, ImageSpec
    from defectmine.pipeline import list_images
    from defectmine.segment import load_segmenter

    root, data, _ = fitted
    images = tmp_path / "new"
    shutil.copytree(data / "anomalous", images)
    out = tmp_path / "pred"
    result = _invoke("segment", "predict", "--model", root / "run" / "model", "--data", images, "--out", out,
                     "--probabilities", "-q")
    assert result.exit_code == 0, result.output
    with open(out / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 18
    segmenter = load_segmenter(root / "run" / "model")
    records = sorted(list_images(images), key=lambda r: str(r.path))
    expected = segmenter.predict_classes(ImageDataset(records, ImageSpec(size=(32, 32), channels=1),
                                                      classes=segmenter.classes_))
    by_path = {str(r.path): k for k, r in enumerate(records)}
    for row in rows:
        mask = Image.open(out / row["mask"])
        assert mask.mode == "P" and mask.getpalette()[:3] == [0, 0, 0]  # class 0 black
        labels = np.asarray(mask)
        np.testing.assert_array_equal(labels, expected[by_path[row["path"]]])
        for c, name in enumerate(("scratch", "spot"), start=1):
            assert int(row[f"area_px_{name}"]) == int((labels == c).sum())
            assert float(row[f"area_pct_{name}"]) == pytest.approx(100 * (labels == c).mean(), abs=1e-3)
        present = {n for n, c in (("scratch", 1), ("spot", 2)) if (labels == c).any()}
        assert set(filter(None, row["classes_present"].split(";"))) == present
        assert row["predicted"] in ("anomalous", "normal") and (out / row["overlay"]).is_file()
        assert np.load(out / row["probabilities"]).shape == (2, 32, 32)


def test_evaluate_reproduces_the_test_metrics_of_fit(fitted):
    root, _, _ = fitted
    run = root / "run"
    before = json.loads((run / "metrics.json").read_text())
    result = _invoke("segment", "evaluate", run, "-q")
    assert result.exit_code == 0, result.output
    after = json.loads((run / "metrics.json").read_text())
    assert after["segmentation"] == before["segmentation"]
    assert after["test"] == before["test"] and after["threshold"] == before["threshold"]
    assert after["timing"]["fit_seconds"] == before["timing"]["fit_seconds"]


def test_evaluate_refuses_a_run_whose_split_changed(fitted, tmp_path):
    root, _, _ = fitted
    copy = tmp_path / "run"
    shutil.copytree(root / "run", copy)
    with open(copy / "split.csv", "a") as f:
        f.write("\n")
    _one_line_error(_invoke("segment", "evaluate", copy), "split.csv")


@pytest.mark.parametrize("args, fragment", [
    (["--encoder", "no_such_net"], "unknown encoder"),
    (["-p", "lr=abc"], "lr"),
    (["--loss", "nonsense"], "nonsense"),
    (["--blend", "poisson,glue"], "unknown glue"),
    (["--resize", "squash"], "squash"),
])
def test_bad_options_fail_in_one_line(fitted, tmp_path, args, fragment):
    _, data, _ = fitted
    options = [a for a in FAST if a not in ("--encoder", "cnn")] if "--encoder" in args else FAST
    _one_line_error(_invoke("segment", "fit", "--data", data, "--out", tmp_path / "new", *options, *args), fragment)
    assert not (tmp_path / "new").exists()


def test_blend_reaches_the_injection_hook_and_the_run_config():
    from defectmine.pipeline.segment_run import SegmentConfig

    config = SegmentConfig(data="unused", blend=["cutpaste"])  # a JSON round trip gives a list
    assert config.blend == ("cutpaste",)


def test_fit_with_one_blend_records_it(fitted, tmp_path):
    _, data, _ = fitted
    result = _invoke("segment", "fit", "--data", data, "--out", tmp_path / "run", *FAST, "--blend", "cutpaste")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "methods=('cutpaste',)" in metrics["training"]["injection"]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["run"]["blend"] == ["cutpaste"]


def test_fit_with_pad_resize_keeps_the_aspect_ratio_setting_in_the_model(fitted, tmp_path):
    _, data, _ = fitted
    result = _invoke("segment", "fit", "--data", data, "--out", tmp_path / "run", *FAST, "--resize", "pad")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["spec"]["resize"] == "pad"


def test_a_non_empty_out_is_refused_without_overwrite(fitted):
    root, data, _ = fitted
    _one_line_error(_invoke("segment", "fit", "--data", data, "--out", root / "run", *FAST), "--overwrite")


def test_training_defects_without_masks_are_one_error(fitted, tmp_path):
    _, data, _ = fitted
    bare = tmp_path / "bare"
    shutil.copytree(data, bare, ignore=shutil.ignore_patterns("masks"))
    _one_line_error(_invoke("segment", "fit", "--data", bare, "--out", tmp_path / "out", *FAST), "has a mask")
    assert not (tmp_path / "out").exists()


def test_segment_evaluate_refuses_a_detection_run(tmp_path):
    from defectmine.pipeline.run_folder import RUN_CONFIG

    (tmp_path / RUN_CONFIG).write_text(json.dumps({"run": {"data": "x"}}))
    _one_line_error(_invoke("segment", "evaluate", tmp_path), "defectmine evaluate")


def test_detection_evaluate_points_a_segmentation_run_to_segment_evaluate(tmp_path):
    from defectmine.errors import ConfigError
    from defectmine.pipeline import evaluate_run

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"task": "segment", "run": {"data": "x"}}')
    with pytest.raises(ConfigError, match="segment evaluate"):
        evaluate_run(run, quiet=True)


def test_predict_stops_on_an_unreadable_image_unless_skip_bad(fitted, tmp_path):
    root, data, _ = fitted
    images = tmp_path / "images"
    shutil.copytree(data / "normal", images)
    (images / "broken.png").write_bytes(b"not a png")
    stopped = _invoke("segment", "predict", "--model", root / "run" / "model", "--data", images,
                      "--out", tmp_path / "a", "-q")
    assert stopped.exit_code == 2 and "broken.png" in stopped.output and "--skip-bad" in stopped.output
    assert not (tmp_path / "a").exists()
    skipped = _invoke("segment", "predict", "--model", root / "run" / "model", "--data", images,
                      "--out", tmp_path / "b", "--skip-bad", "-q")
    assert skipped.exit_code == 0, skipped.output
    with open(tmp_path / "b" / "skipped.csv") as f:
        assert [row["path"].endswith("broken.png") for row in csv.DictReader(f)] == [True]
    with open(tmp_path / "b" / "scores.csv") as f:
        assert len(list(csv.DictReader(f))) == len(list((data / "normal").iterdir()))
