"""Mask proposals from maps, their measurement, and model-assisted `label next` / the CLI on a tiny folder."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from defectmine.cli import app
from defectmine.data import ImageSpec
from defectmine.errors import ConfigError, DataError
from defectmine.labelling import ProposalSettings, choose_settings, defect_ious, measure, propose, to_image_size
from defectmine.labelling.proposals import source_maps


def _blobs(seed=0, n=6, size=32):
    """Maps with two bright squares each (the defects) on noise, and their masks."""
    rng = np.random.default_rng(seed)
    maps = rng.random((n, size, size)).astype(np.float32) * 0.3
    masks = np.zeros((n, size, size), bool)
    for i in range(n):
        for _ in range(2):
            y, x = rng.integers(2, size - 10, size=2)
            masks[i, y:y + 7, x:x + 7] = True
    maps[masks] += 0.6
    return maps, masks


def test_propose_splits_components_drops_specks_and_ranks_by_confidence():
    amap = np.zeros((20, 20), np.float32)
    amap[2:6, 2:6] = 0.9
    amap[10:16, 10:16] = 0.6
    amap[18, 1] = 1.0  # a one-pixel speck: opened away
    found = propose(amap, ProposalSettings(threshold=0.5, min_area=4))
    # the elliptical (cross-shaped at radius 1) opening rounds off each square's 4 corners
    assert [p.area for p in found] == [12, 32] and found[0].confidence == pytest.approx(0.9)
    assert propose(amap, ProposalSettings(threshold=0.5, min_area=20))[0].area == 32
    with pytest.raises(DataError, match="2-d"):
        propose(np.zeros(5), ProposalSettings(threshold=0.5))


def test_defect_ious_per_true_component():
    truth = np.zeros((10, 10), bool)
    truth[0:2, 0:2] = True  # found exactly
    truth[6:10, 6:10] = True  # missed
    found = propose(truth.astype(np.float32), ProposalSettings(threshold=0.5, open_px=0, close_px=0, min_area=1))
    assert defect_ious(found[:1] if found[0].area == 4 else found[1:], truth) == [1.0, 0.0]


def test_threshold_chosen_on_val_finds_the_defects_and_confidence_is_a_quantile():
    val_maps, val_masks = _blobs(0)
    settings = choose_settings(val_maps, val_masks)
    assert 0.2 <= settings.threshold <= 0.9  # between the noise (< 0.3) and the defects (> 0.6)
    test_maps, test_masks = _blobs(1)
    result = measure(test_maps, test_masks, settings)
    assert result["mean_iou"] > 0.8 and result["share_iou_50"] == 1.0 and result["defects"] >= 6
    assert 0.9 < propose(test_maps[0], settings)[0].confidence <= 1.0
    noise = measure(np.random.default_rng(2).random((6, 32, 32)).astype(np.float32) * 0.3, test_masks, settings)
    assert noise["mean_iou"] < 0.1  # maps that show nothing give poor proposals
    with pytest.raises(DataError, match="no validation image has a defect"):
        choose_settings(val_maps, np.zeros_like(val_masks))


def test_to_image_size_undoes_the_letterbox():
    spec = ImageSpec(size=(8, 8), channels=1, resize="pad")
    amap = np.zeros((8, 8), np.float32)
    amap[2:6, :] = 1.0  # a 16x32 image letterboxed into rows 2..5
    full = to_image_size(amap, spec, 16, 32)
    assert full.shape == (16, 32) and full.min() == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="unknown"):
        source_maps(None, None, "nope")


@pytest.mark.slow
def test_model_assisted_next_and_the_cli(synthetic_folder, tmp_path):
    from defectmine.data import scan_folder, make_split, ImageDataset
    from defectmine.models.registry import create

    split = make_split(scan_folder(synthetic_folder), n_train_anomalous=2, seed=0)
    spec = ImageSpec(size=(32, 32), channels=1)
    detector = create("fcdd", epochs=2, width=4, batch_size=8, device="cpu", quiet=True, seed=0)
    detector.fit(ImageDataset(split.normal_train, spec), ImageDataset(split.train_anomalous, spec))
    detector.save(tmp_path / "model")

    runner = CliRunner()
    project = str(tmp_path / "proj")
    out = runner.invoke(app, ["label", "init", "-P", project, "--images", str(synthetic_folder),
                              "--classes", "scratch,spot", "--who", "ana"])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["label", "next", "-P", project, "-n", "5", "--strategy", "score",
                              "--model", str(tmp_path / "model"), "--proposal-threshold", "0.0"])
    assert out.exit_code == 0, out.output
    tasks = json.loads((tmp_path / "proj/batches/round-0001/tasks.json").read_text())
    regions = [r for t in tasks for r in t["predictions"][0]["result"]]
    assert regions and all(np.isfinite(r["score"]) for r in regions) and tasks[0]["predictions"][0]["model_version"]
    assert all(r["original_width"] == 32 and r["value"]["brushlabels"] == ["scratch"] for r in regions)
    # the labeller accepts the proposals as they are: the import gives back the same masks
    export = [{"id": i, "data": t["data"], "annotations": [{"id": i, "result": t["predictions"][0]["result"]}]}
              for i, t in enumerate(tasks)]
    (tmp_path / "export.json").write_text(json.dumps(export))
    out = runner.invoke(app, ["label", "import", str(tmp_path / "export.json"), "-P", project])
    assert out.exit_code == 0 and "5 new label(s)" in out.output, out.output
    from defectmine.labelling.brush import rle_to_mask
    from defectmine.labelling.loop import open_store

    with open_store(project) as store:
        current = store.current_labels()
    for t in tasks:
        expected = np.zeros((32, 32), bool)
        for r in t["predictions"][0]["result"]:
            expected |= rle_to_mask(r["value"]["rle"], 32, 32)
        label = current[t["data"]["defectmine_id"]]
        assert np.array_equal(label.mask > 0 if label.mask is not None else np.zeros((32, 32), bool), expected)
    out = runner.invoke(app, ["label", "status", "-P", project])
    assert out.exit_code == 0 and "model versions" in out.output
    # bad input through the CLI: one red line, exit code 2
    out = runner.invoke(app, ["label", "import", str(tmp_path / "missing.json"), "-P", project])
    assert out.exit_code == 2 and "file not found" in out.output
