"""Run folders as one consistent unit, options checked before any work, val-only thresholds, and
model folders that fail with one clear line."""

import csv
import json
import shutil
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from defectmine.cli import app
from defectmine.data import ImageDataset, ImageSpec, scan_folder, write_manifest, write_synthetic_folder
from defectmine.errors import ConfigError, DataError
from defectmine.evaluation.split_metrics import threshold_on_val
from defectmine.models.registry import load_detector
from defectmine.pipeline import RunConfig, evaluate_run, fit_run
import defectmine.pipeline.run as pipeline_run

PARAMS = {"epochs": 1, "width": 4, "batch_size": 8, "device": "cpu"}
runner = CliRunner()


def _config(data, **kwargs) -> RunConfig:
    return RunConfig(data=str(data), detector_params=dict(PARAMS), image_size=32, quiet=True, **kwargs)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_synthetic_folder(tmp_path_factory.mktemp("pipeline") / "data", n_normal=24, n_anomalous=10)


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    fit_run(_config(data), out)
    return out


# -- run folder integrity -------------------------------------------------------------------------
def test_a_non_empty_out_is_refused_before_any_work_unless_overwrite(data, run, monkeypatch):
    before = (run / "config.json").read_text()
    monkeypatch.setattr(pipeline_run, "build_datasets", lambda *a, **k: pytest.fail("decoded images"))
    with pytest.raises(ConfigError, match="not empty.*--overwrite"):
        fit_run(_config(data), run)
    assert (run / "config.json").read_text() == before


def test_overwrite_replaces_the_whole_folder(data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "stale.txt").write_text("from an old run")
    fit_run(_config(data), out, overwrite=True)
    assert not (out / "stale.txt").exists() and (out / "model" / "model.safetensors").is_file()


def test_an_interrupted_fit_leaves_the_old_run_and_no_partial_folder(data, run, tmp_path, monkeypatch):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline_run, "fit_and_evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fit_run(_config(data), copy, overwrite=True)
    assert {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no .partial left behind
    with pytest.raises(KeyboardInterrupt):
        fit_run(_config(data), tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_evaluate_refuses_a_model_from_another_run(data, run, tmp_path):
    other = tmp_path / "other"
    fit_run(_config(data, seed=1), other)
    mixed = tmp_path / "mixed"
    shutil.copytree(run, mixed)
    shutil.rmtree(mixed / "model")
    shutil.copytree(other / "model", mixed / "model")
    with pytest.raises(DataError, match="not fitted in this run"):
        evaluate_run(mixed, quiet=True)


def test_evaluate_refuses_an_edited_split(run, tmp_path):
    edited = tmp_path / "edited"
    shutil.copytree(run, edited)
    lines = (edited / "split.csv").read_text().splitlines()
    (edited / "split.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DataError, match="not the split this run was fitted on"):
        evaluate_run(edited, quiet=True)


def test_a_moved_run_evaluates_and_moved_data_is_re_pointed_with_data_root(data, run, tmp_path):
    moved_run = tmp_path / "elsewhere" / "run"
    shutil.copytree(run, moved_run)
    result = evaluate_run(moved_run, quiet=True)
    assert result.metrics["test"]["auroc"] == json.loads((run / "metrics.json").read_text())["test"]["auroc"]

    recorded_root = Path(json.loads((run / "config.json").read_text())["data_root"])
    moved_data = tmp_path / "moved-data"
    shutil.copytree(recorded_root, moved_data)
    split_rows = list(csv.DictReader(open(run / "split.csv")))
    assert not any(Path(r["path"]).is_absolute() for r in split_rows)  # relative to the data root
    gone = tmp_path / "run-with-missing-data"
    shutil.copytree(run, gone)
    document = json.loads((gone / "config.json").read_text())
    document["data_root"] = str(tmp_path / "nowhere")
    (gone / "config.json").write_text(json.dumps(document))
    with pytest.raises(DataError, match="--data-root"):
        evaluate_run(gone, quiet=True)
    assert evaluate_run(gone, quiet=True, data_root=moved_data).metrics["test"] == result.metrics["test"]


def test_config_records_what_was_really_used(data, run, tmp_path):
    document = json.loads((run / "config.json").read_text())
    assert Path(document["run"]["data"]).is_absolute() and document["split_source"] == "seeded"
    assert document["run"]["split_seed"] == 0
    records = [r.with_split("val" if i % 3 == 0 else "test" if i % 3 == 1 else "train")
               for i, r in enumerate(scan_folder(data))]
    records = [r.with_split("train_anomalous") if r.is_anomalous and r.split == "train" else r for r in records]
    manifest = write_manifest(records, tmp_path / "data.csv")
    fit_run(_config(manifest), tmp_path / "csv-run")
    document = json.loads((tmp_path / "csv-run" / "config.json").read_text())
    assert document["split_source"] == "records" and document["run"]["split_seed"] is None


# -- val only ---------------------------------------------------------------------------------------
def test_the_threshold_refuses_test_images(data):
    records = scan_folder(data)
    spec = ImageSpec(size=(32, 32), channels=1)
    test = ImageDataset([r.with_split("test") for r in records], spec)
    with pytest.raises(ConfigError, match="validation images only"):
        threshold_on_val("max_f1", test, test.labels.astype(float))
    val = ImageDataset([r.with_split("val") for r in records], spec)
    assert threshold_on_val("max_f1", val, val.labels.astype(float)).value == 0.5  # between the 0 and 1 scores


# -- options fail in the first second, one line ---------------------------------------------------
@pytest.mark.parametrize(
    "args, message",
    [
        (["--threshold-rule", "median"], "--threshold-rule 'median' is unknown"),
        (["--threshold-rule", "fixed"], "needs --threshold-value"),
        (["--threshold-rule", "mean_std", "--threshold-k", "nan"], "--threshold-k nan: must be a finite number"),
        (["-p", "lr=abc"], "option lr='abc' must be a number"),
        (["-p", "epochs=2.5"], "option epochs=2.5 must be a whole number"),
        (["--image-size", "4"], "--image-size 4 is too small"),
    ],
)
def test_bad_options_fail_before_decoding_with_one_line(data, tmp_path, args, message, monkeypatch):
    monkeypatch.setattr(pipeline_run, "build_datasets", lambda *a, **k: pytest.fail("decoded images"))
    started = time.perf_counter()
    result = runner.invoke(app, ["fit", "--data", str(data), "--out", str(tmp_path / "o"), "--image-size", "32",
                                 "--epochs", "1", "--device", "cpu", "-q", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert time.perf_counter() - started < 5
    assert not (tmp_path / "o").exists()


def test_max_f1_with_normal_only_validation_suggests_mean_std(data, tmp_path):
    records = [r.with_split("train") if not r.is_anomalous else r.with_split("test") for r in scan_folder(data)]
    normals = [r for r in records if not r.is_anomalous]
    records = [r.with_split("val") if r in normals[:6] else r for r in records]
    manifest = write_manifest(records, tmp_path / "normal-val.csv")
    with pytest.raises(ConfigError, match="only normal images.*mean_std"):
        fit_run(_config(manifest), tmp_path / "o")
    fit_run(_config(manifest, threshold_rule="mean_std"), tmp_path / "o2")


# -- model folders --------------------------------------------------------------------------------
def _broken(run: Path, tmp_path: Path, name: str) -> Path:
    model = tmp_path / name
    shutil.copytree(run / "model", model)
    return model


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda m: shutil.rmtree(m), "no such model folder"),
        (lambda m: (m / "model.safetensors").unlink(), "model.safetensors missing"),
        (lambda m: (m / "model.safetensors").write_bytes(b""), "cannot read the weights"),
        (lambda m: (m / "model.safetensors").write_bytes((m / "model.safetensors").read_bytes()[:200]),
         "cannot read the weights"),
        (lambda m: (m / "config.json").write_text("{not json"), "not valid JSON"),
        (lambda m: (m / "config.json").write_text('{"detector": "fcdd"}'), "incomplete model config"),
        (lambda m: (m / "config.json").write_text(
            (m / "config.json").read_text().replace('"width": 4', '"width": 6')), "another shape"),
        (lambda m: (m / "config.json").write_text(
            (m / "config.json").read_text().replace('"detector": "fcdd"', '"detector": "magic"')), "unknown detector"),
    ],
)
def test_broken_model_folders_give_one_error_naming_the_file(run, tmp_path, damage, message):
    model = _broken(run, tmp_path, "model")
    damage(model)
    with pytest.raises(DataError, match=message) as raised:
        load_detector(model)
    assert str(model) in str(raised.value)


def test_in_memory_sets_can_be_marked_as_validation():
    import torch

    spec = ImageSpec(size=(8, 8), channels=1)
    images = torch.zeros((4, 1, 8, 8), dtype=torch.uint8)
    unsplit = ImageDataset.from_tensor(images, spec, labels=[0, 0, 1, 1])
    with pytest.raises(ConfigError, match="4 unsplit"):
        threshold_on_val("max_f1", unsplit, [0.1, 0.2, 0.8, 0.9])
    val = ImageDataset.from_tensor(images, spec, labels=[0, 0, 1, 1], split="val")
    assert threshold_on_val("max_f1", val, [0.1, 0.2, 0.8, 0.9]).value == pytest.approx(0.5)
    with pytest.raises(DataError, match="split='later'"):
        ImageDataset.from_tensor(images, spec, split="later")


def test_pixel_metrics_leave_out_anomalous_images_without_masks(data, tmp_path):
    from dataclasses import replace

    # every "spot" defect loses its mask: those images are unknown, not normal, at pixel level
    records = [replace(r, mask=None) if r.defect_class == "spot" else r for r in scan_folder(data)]
    result = fit_run(_config(data), tmp_path / "run", records=records)
    pixel = result.metrics["test_pixel"]
    with open(tmp_path / "run" / "split.csv") as f:
        test = [row for row in csv.DictReader(f) if row["split"] == "test"]
    unmasked = sum(row["defect_class"] == "spot" for row in test)
    assert unmasked > 0
    assert pixel["n_images_without_mask"] == unmasked and pixel["n_images"] == len(test) - unmasked


def test_evaluate_can_draw_gradcam_heatmaps(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    result = runner.invoke(app, ["evaluate", str(copy), "--heatmap", "gradcam", "-q"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((copy / "metrics.json").read_text())
    assert metrics["heatmap"] == "gradcam" and "pixel_auroc" in metrics["test_pixel"]
    bad = runner.invoke(app, ["evaluate", str(copy), "--heatmap", "magic", "-q"])
    assert bad.exit_code == 2 and "heatmap='magic' is unknown" in bad.output
