"""`predict`: streaming scoring, bounded overlays, letterbox cropping, every image listed, stale outputs."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from defectmine.cli import app
from defectmine.data.images import ImageSpec
from defectmine.errors import ConfigError, DataError
from defectmine.explain.overlay import display_size, overlay
from defectmine.models.base import Scores
from defectmine.pipeline import predict as predict_module
from defectmine.pipeline import predict_inputs
from defectmine.pipeline.predict import predict_folder


@dataclass
class _Config:
    score_batch_size: int = 4


class MapIsImage:
    """A stand-in detector whose anomaly map is the (prepared) image itself, scaled to [0, 1]: where a
    heatmap lands on the overlay can then be checked by eye and by test. Records its batch sizes."""

    name = "map_is_image"

    def __init__(self, spec: ImageSpec, on_score=None):
        self.spec_, self.config, self.batches, self.on_score = spec, _Config(), [], on_score

    def score(self, pixels: torch.Tensor) -> Scores:
        assert pixels.dtype == torch.uint8 and tuple(pixels.shape[1:]) == (self.spec_.channels, *self.spec_.size)
        self.batches.append(len(pixels))
        if self.on_score is not None:
            self.on_score(self)
        maps = pixels[:, 0].float().numpy() / 255.0
        return Scores(image=maps.mean(axis=(1, 2)), maps=maps)


@pytest.fixture
def stub(monkeypatch):
    """Install a MapIsImage detector for every predict_folder call; returns a setter for its spec."""
    holder = {}

    def use(spec=ImageSpec(size=(16, 16), channels=1), on_score=None):
        holder["detector"] = MapIsImage(spec, on_score)
        return holder["detector"]

    monkeypatch.setattr(predict_module, "load_detector", lambda path: holder["detector"])
    return use


def _png(path: Path, size=(16, 16), value=128, mode="L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)
    return path


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _names(rows) -> list[str]:
    return [Path(r["path"]).name for r in rows]


# -- 1. streaming --------------------------------------------------------------------------------------


def test_files_are_decoded_and_written_batch_by_batch(stub, tmp_path, monkeypatch):
    for i in range(10):
        _png(tmp_path / "data" / f"im{i:02d}.png", value=20 * i)
    reads, seen = [], []
    real_read = predict_inputs.read_image
    monkeypatch.setattr(predict_inputs, "read_image", lambda p: reads.append(p) or real_read(p))
    out = tmp_path / "out"

    def on_score(detector):
        # At each score call only this batch has been decoded, and the earlier batches are on disk already.
        stage = next(out.glob(".predict-partial-*"))
        written = len(_rows(stage / "scores.csv")) if (stage / "scores.csv").exists() else 0
        seen.append((len(reads), written, len(list((stage / "overlays").glob("*.png"))) if written else 0))

    stub(on_score=on_score)
    summary = predict_folder(tmp_path / "model", str(tmp_path / "data"), out, batch_size=4, quiet=True)
    assert seen == [(4, 0, 0), (8, 4, 4), (10, 8, 8)]
    assert summary.n_scored == 10 and len(_rows(out / "scores.csv")) == 10
    assert len(list((out / "overlays").glob("*.png"))) == 10
    assert not list(out.glob(".predict-partial-*"))  # the stage is moved into place and removed


def test_display_range_is_fixed_by_the_first_batch_for_a_bare_model(stub, tmp_path):
    # The first batch is dark, a later image bright: its overlay saturates instead of re-scaling everything.
    for i in range(4):
        _png(tmp_path / "data" / f"a{i}.png", value=10 + 10 * i)
    _png(tmp_path / "data" / "z_bright.png", value=250)
    stub()
    summary = predict_folder(tmp_path / "model", str(tmp_path / "data"), tmp_path / "out", batch_size=4,
                             display_quantile=1.0, quiet=True)
    assert summary.display_source == "first batch"
    assert summary.display_range == pytest.approx((10 / 255, 40 / 255))
    saved = json.loads((tmp_path / "out" / "predict.json").read_text())
    assert saved["display_source"] == "first batch" and saved["display_range"] == pytest.approx(summary.display_range)


def test_decoding_workers_give_the_same_rows(stub, tmp_path):
    for i in range(6):
        _png(tmp_path / "data" / f"im{i}.png", value=30 * i)
    stub()
    predict_folder(tmp_path / "model", str(tmp_path / "data"), tmp_path / "w0", batch_size=4, quiet=True)
    predict_folder(tmp_path / "model", str(tmp_path / "data"), tmp_path / "w2", batch_size=4, workers=2, quiet=True)
    assert _rows(tmp_path / "w0" / "scores.csv") == _rows(tmp_path / "w2" / "scores.csv")


# -- 2. large images -----------------------------------------------------------------------------------


def test_display_size_bounds_the_longest_side_and_keeps_aspect():
    assert display_size(2000, 3000, 2048) == (1365, 2048)
    assert display_size(3000, 10, 2048) == (2048, 7)
    assert display_size(40, 48, 2048) == (40, 48)  # never enlarged
    with pytest.raises(ConfigError):
        display_size(10, 10, 0)


def test_overlay_of_a_large_image_is_bounded(stub, tmp_path):
    _png(tmp_path / "data" / "big.png", size=(3000, 2000), value=90)
    _png(tmp_path / "data" / "small.png", size=(48, 40), value=90)
    stub()
    predict_folder(tmp_path / "model", str(tmp_path / "data"), tmp_path / "out", quiet=True)
    rows = {Path(r["path"]).name: r for r in _rows(tmp_path / "out" / "scores.csv")}
    big = Image.open(tmp_path / "out" / rows["big.png"]["overlay"])
    assert big.size == (2048, 1365)  # (width, height): longest side 2048, aspect 3:2 kept
    assert Image.open(tmp_path / "out" / rows["small.png"]["overlay"]).size == (48, 40)  # small ones as they are
    predict_folder(tmp_path / "model", str(tmp_path / "data"), tmp_path / "out2", overlay_size=300, quiet=True)
    rows = {Path(r["path"]).name: r for r in _rows(tmp_path / "out2" / "scores.csv")}
    assert Image.open(tmp_path / "out2" / rows["big.png"]["overlay"]).size == (300, 200)


# -- 3. letterboxed input ------------------------------------------------------------------------------


def test_overlay_content_box_crops_the_map_before_resizing():
    heat = np.zeros((32, 32))
    heat[12:20, :] = 1.0  # hot where a 4:1 image lies inside the letterboxed input, cold in the bars
    image = np.zeros((50, 200), np.uint8)
    cropped = overlay(image, heat, 0.0, 1.0, alpha=1.0, cmap="gray", content=(12, 0, 8, 32))
    assert (cropped == 255).all()
    stretched = overlay(image, heat, 0.0, 1.0, alpha=1.0, cmap="gray")
    assert (stretched[0] == 0).all()  # what stretching the bars onto the image would show
    with pytest.raises(ConfigError):
        overlay(image, heat, 0.0, 1.0, content=(30, 0, 8, 32))


def test_pad_resize_overlays_show_only_the_image_content(stub, tmp_path):
    _png(tmp_path / "data" / "wide.png", size=(200, 50), value=255)  # white: the map is hot in the content
    stub(ImageSpec(size=(32, 32), channels=1, resize="pad"))
    predict_folder(tmp_path / "model", str(tmp_path / "data"), tmp_path / "out", display_quantile=1.0, quiet=True)
    row = _rows(tmp_path / "out" / "scores.csv")[0]
    pixels = np.asarray(Image.open(tmp_path / "out" / row["overlay"]).convert("RGB")).astype(int)
    assert pixels.shape == (50, 200, 3)
    # jet's hot end is red, its cold end blue: every pixel of the image is hot, none shows a bar
    assert (pixels[..., 0] > pixels[..., 2] + 40).all()


# -- 4. every image is listed --------------------------------------------------------------------------


def test_every_image_is_scored_with_layout_labels_and_hidden_files_left_out(stub, tmp_path):
    data = tmp_path / "data"
    for rel in ("normal/n1.png", "normal/sub/n2.png", "anomalous/crack/c1.png", "anomalous/loose_a.png",
                "top.png", "other/o1.jpg", "other/deep/o2.bmp"):
        _png(data / rel)
    for rel in ("masks/anomalous/crack/c1.png", ".hidden/h.png", "normal/._n1.png", "__MACOSX/normal/m.png",
                "normal/.ipynb_checkpoints/n1.png"):
        _png(data / rel)
    (data / "notes.txt").write_text("not an image")
    stub()
    summary = predict_folder(tmp_path / "model", str(data), tmp_path / "out", quiet=True)
    rows = _rows(tmp_path / "out" / "scores.csv")
    got = {str(Path(r["path"]).relative_to(data)): (r["label"], r["defect_class"]) for r in rows}
    assert got == {
        "normal/n1.png": ("normal", ""), "normal/sub/n2.png": ("normal", ""),
        "anomalous/crack/c1.png": ("anomalous", "crack"), "anomalous/loose_a.png": ("anomalous", "anomalous"),
        "top.png": ("unlabelled", ""), "other/o1.jpg": ("unlabelled", ""), "other/deep/o2.bmp": ("unlabelled", ""),
    }
    assert summary.n_scored == summary.n_listed == 7 and summary.skipped_csv is None


def test_a_folder_without_the_layout_is_all_unlabelled_and_masks_are_images_there(stub, tmp_path):
    _png(tmp_path / "data" / "masks" / "a.png")
    _png(tmp_path / "data" / "b.png")
    stub()
    predict_folder(tmp_path / "model", str(tmp_path / "data"), tmp_path / "out", quiet=True)
    assert {r["label"] for r in _rows(tmp_path / "out" / "scores.csv")} == {"unlabelled"}
    assert len(_rows(tmp_path / "out" / "scores.csv")) == 2


def test_manifest_and_single_image(stub, tmp_path):
    a, b = _png(tmp_path / "imgs" / "a.png"), _png(tmp_path / "imgs" / "b.png")
    (tmp_path / "list.csv").write_text(f"path,label\n{a},normal\n{b},anomalous\n")
    stub()
    predict_folder(tmp_path / "model", str(tmp_path / "list.csv"), tmp_path / "o1", quiet=True)
    assert [r["label"] for r in _rows(tmp_path / "o1" / "scores.csv")] == ["normal", "anomalous"]
    predict_folder(tmp_path / "model", str(b), tmp_path / "o2", quiet=True)
    assert _names(_rows(tmp_path / "o2" / "scores.csv")) == ["b.png"]


def test_unreadable_file_is_one_error_without_skip_bad_and_listed_with_it(stub, tmp_path):
    data = tmp_path / "data"
    for i in range(3):
        _png(data / f"ok{i}.png")
    (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    stub()
    with pytest.raises(DataError, match="broken.png") as err:
        predict_folder(tmp_path / "model", str(data), tmp_path / "out", quiet=True)
    assert "--skip-bad" in str(err.value)
    assert not (tmp_path / "out").exists()  # nothing half-written
    summary = predict_folder(tmp_path / "model", str(data), tmp_path / "out", skip_bad=True, quiet=True)
    assert summary.n_scored == 3 and summary.n_skipped == 1
    skipped = _rows(tmp_path / "out" / "skipped.csv")
    assert _names(skipped) == ["broken.png"] and skipped[0]["reason"]
    assert "broken.png" not in _names(_rows(tmp_path / "out" / "scores.csv"))


def test_all_unreadable_is_an_error_even_with_skip_bad(stub, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.png").write_bytes(b"nope")
    stub()
    with pytest.raises(DataError, match="none of the 1 image"):
        predict_folder(tmp_path / "model", str(tmp_path / "data"), tmp_path / "out", skip_bad=True, quiet=True)


# -- 5. stale outputs and duplicates -------------------------------------------------------------------


def test_non_empty_out_is_refused_and_overwrite_replaces_the_old_outputs(stub, tmp_path):
    data = tmp_path / "data"
    for i in range(3):
        _png(data / f"im{i}.png")
    (data / "bad.png").write_bytes(b"nope")
    out = tmp_path / "out"
    stub()
    predict_folder(tmp_path / "model", str(data), out, skip_bad=True, quiet=True)
    (out / "mine.txt").write_text("the user's own file")
    with pytest.raises(ConfigError, match="--overwrite"):
        predict_folder(tmp_path / "model", str(data), out, quiet=True)
    for i in (1, 2):
        (data / f"im{i}.png").unlink()
    (data / "bad.png").unlink()
    predict_folder(tmp_path / "model", str(data), out, overwrite=True, quiet=True)
    assert _names(_rows(out / "scores.csv")) == ["im0.png"]
    assert len(list((out / "overlays").iterdir())) == 1  # the old overlays are gone
    assert not (out / "skipped.csv").exists()  # so is the old list of skipped files
    assert (out / "mine.txt").is_file()


def test_failed_predict_keeps_the_earlier_outputs(stub, tmp_path):
    data = tmp_path / "data"
    _png(data / "a.png")
    stub()
    predict_folder(tmp_path / "model", str(data), tmp_path / "out", quiet=True)
    (data / "b.png").write_bytes(b"nope")
    with pytest.raises(DataError):
        predict_folder(tmp_path / "model", str(data), tmp_path / "out", overwrite=True, quiet=True)
    assert _names(_rows(tmp_path / "out" / "scores.csv")) == ["a.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["overlays", "predict.json", "scores.csv"]


def test_symlinked_duplicates_are_scored_once_and_accounted_for(stub, tmp_path):
    data = tmp_path / "data"
    _png(data / "normal" / "a.png")
    _png(data / "normal" / "b.png")
    os.symlink(data / "normal" / "a.png", data / "a_link.png")
    os.symlink(data / "normal", data / "all")  # a symlinked folder: both of its images again
    os.symlink(data, data / "normal" / "loop")  # a link back up the tree must not recurse forever
    stub()
    summary = predict_folder(tmp_path / "model", str(data), tmp_path / "out", quiet=True)
    rows = _rows(tmp_path / "out" / "scores.csv")
    # scored under the path that carries a label, the others listed as duplicates
    assert [str(Path(r["path"]).relative_to(data)) for r in rows] == ["normal/a.png", "normal/b.png"]
    assert [r["label"] for r in rows] == ["normal", "normal"]
    skipped = {str(Path(r["path"]).relative_to(data)): r["reason"] for r in _rows(tmp_path / "out" / "skipped.csv")}
    assert set(skipped) == {"a_link.png", "all/a.png", "all/b.png"}
    assert all("same file as" in reason for reason in skipped.values())
    assert summary.n_duplicates == 3 and summary.n_skipped == 0


def test_output_inside_the_data_folder_is_not_scored_again(stub, tmp_path):
    data = tmp_path / "data"
    _png(data / "a.png")
    stub()
    predict_folder(tmp_path / "model", str(data), data / "preds", quiet=True)
    summary = predict_folder(tmp_path / "model", str(data), data / "preds", overwrite=True, quiet=True)
    assert summary.n_listed == 1


# -- with real models ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory):
    from defectmine.data import write_synthetic_folder
    from defectmine.pipeline import RunConfig, fit_run

    root = tmp_path_factory.mktemp("predict_run")
    data = write_synthetic_folder(root / "data", n_normal=20, n_anomalous=8, size=32)
    config = RunConfig(data=str(data), detector="fcdd", image_size=32, quiet=True, display_quantile=0.5,
                       detector_params={"epochs": 1, "width": 8, "batch_size": 16, "device": "cpu"})
    return fit_run(config, root / "run"), data


def test_fit_records_the_validation_map_range_and_predict_draws_on_it(fitted_run, tmp_path):
    from defectmine.explain import display_range

    result, data = fitted_run
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    recorded = metrics["display_range"]
    from defectmine.data import ImageDataset, read_manifest

    val = ImageDataset([r for r in read_manifest(result.run_dir / "split.csv", root=data) if r.split == "val"],
                       result.detector.spec_)
    maps = result.detector.score(val).maps
    assert (recorded["map_min"], recorded["map_max"]) == pytest.approx((float(maps.min()), float(maps.max())))
    summary = predict_folder(result.run_dir / "model", str(data / "normal"), tmp_path / "out", quiet=True)
    assert summary.display_source == "run validation maps"
    assert summary.display_range == pytest.approx(display_range(maps, 0.5))  # the run's quantile
    assert summary.threshold == pytest.approx(metrics["threshold"]["value"]) and summary.threshold_source == "run"


def test_predict_can_draw_gradcam_overlays(fitted_run, tmp_path):
    result, data = fitted_run
    summary = predict_folder(result.run_dir / "model", str(data / "normal"), tmp_path / "out", quiet=True,
                             heatmap="gradcam")
    assert summary.display_range == (0.0, 1.0) and "Grad-CAM" in summary.display_source
    assert summary.n_scored == 20 and len(list((tmp_path / "out" / "overlays").iterdir())) == 20
    with pytest.raises(ConfigError, match="--heatmap 'magic' is unknown"):
        predict_folder(result.run_dir / "model", str(data / "normal"), tmp_path / "out2", quiet=True,
                       heatmap="magic")


def test_a_model_whose_weights_are_not_the_runs_is_refused(fitted_run, tmp_path):
    import shutil

    result, data = fitted_run
    run = tmp_path / "run"
    shutil.copytree(result.run_dir, run)
    weights = run / "model" / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF  # one flipped bit in the last weight
    weights.write_bytes(bytes(blob))
    with pytest.raises(DataError, match="not the ones the run"):
        predict_folder(run / "model", str(data / "normal"), tmp_path / "out", quiet=True)


def test_cli_predict_summary_with_a_bare_model(tmp_path):
    from defectmine.models.fcdd import FCDD

    spec = ImageSpec(size=(32, 32), channels=1)
    detector = FCDD(width=8, device="cpu")
    detector.spec_, detector.network_ = spec, detector._build_network(spec).eval()
    detector.save(tmp_path / "bare")
    for i in range(3):
        _png(tmp_path / "data" / f"im{i}.png", size=(40, 30), value=60 * i)
    (tmp_path / "data" / "bad.png").write_bytes(b"nope")
    result = CliRunner().invoke(app, ["predict", "--model", str(tmp_path / "bare"), "--data", str(tmp_path / "data"),
                                      "--out", str(tmp_path / "out"), "--skip-bad", "-q"])
    assert result.exit_code == 0, result.output
    assert "scored 3 of 4" in result.output and "1 unreadable" in result.output
    assert "first batch" in result.output and "skipped.csv" in result.output
    rows = _rows(tmp_path / "out" / "scores.csv")
    assert "predicted" not in rows[0]  # no run, no threshold: no decision is made up
    again = CliRunner().invoke(app, ["predict", "--model", str(tmp_path / "bare"), "--data", str(tmp_path / "data"),
                                     "--out", str(tmp_path / "out"), "-q"])
    assert again.exit_code == 2 and "--overwrite" in again.output and "Traceback" not in again.output
