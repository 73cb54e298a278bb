"""Self-supervised pretraining: every method saves weights the backbone factory and FCDD load, runs resume,
hierarchical init continues from earlier weights, and mistakes give clear errors."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from defectmine.backbones import build_backbone
from defectmine.data import ImageDataset, ImageSpec, scan_folder, write_manifest, write_synthetic_folder
from defectmine.errors import ConfigError, DataError
from defectmine.models.registry import create
from defectmine.pretrain import INFO_FILE, METHODS, pretrain, pretrain_command, unlabelled_records
from defectmine.pretrain.augment import patch_mask, random_masking, siamese_view

SPEC = ImageSpec(size=(32, 32), channels=1)
TINY = {"width": 4, "stride": 8, "batch_size": 8, "device": "cpu", "quiet": True}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """32x32 models gain nothing from a second thread, and lose much when other jobs share the cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_synthetic_folder(tmp_path_factory.mktemp("unlabelled"), n_normal=24, n_anomalous=4, size=32)


@pytest.fixture(scope="module")
def images(folder):
    return ImageDataset(scan_folder(folder), SPEC)


@pytest.fixture(scope="module")
def outputs(images, tmp_path_factory):
    """One finished 1-epoch run per method, shared by the tests that only read them."""
    root = tmp_path_factory.mktemp("pretrained")
    return {method: pretrain(images, out_dir=root / method, method=method, epochs=1, **TINY) for method in METHODS}


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_saved_weights_are_the_backbone_state_dict_and_load_through_the_factory(outputs, method):
    result = outputs[method]
    info = json.loads((result.out_dir / INFO_FILE).read_text())
    assert info["method"] == method and info["epochs"] == 1 and np.isfinite(info["final_loss"])
    assert info["n_images"] == 28 and info["image_spec"] == SPEC.to_dict() and info["cpu_seconds"] > 0
    assert {"defectmine", "torch", "timm"} <= set(info["versions"]) and info["recipe"]["loss"]
    saved = load_file(str(result.weights))
    loaded = build_backbone(info["backbone"], 1, stride=8, width=4, weights=result.weights).module.state_dict()
    assert saved.keys() == loaded.keys()
    for key, tensor in saved.items():
        assert torch.equal(loaded[key], tensor), key
    fresh = build_backbone(info["backbone"], 1, stride=8, width=4).module.state_dict()
    assert any(not torch.equal(fresh[k], saved[k]) for k in saved)  # training changed something


def test_checkpoints_hold_no_pickles(outputs):
    files = sorted(p.name for p in (outputs["mim"].out_dir / "checkpoint").iterdir())
    assert files == ["network-0001.safetensors", "optimizer-0001.safetensors", "state.json"]


def test_a_second_call_continues_from_the_last_epoch(images, tmp_path):
    first = pretrain(images, out_dir=tmp_path / "run", method="mim", epochs=1, **TINY)
    second = pretrain(images, out_dir=tmp_path / "run", method="mim", epochs=2, **TINY)
    assert first.start_epoch == 0 and second.start_epoch == 1
    assert second.history[0] == first.history[0] and len(second.history) == 2
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoint").glob("*.safetensors"))[0] == "network-0002.safetensors"
    # Resumed = uninterrupted: same batches, masks, schedule and optimizer state.
    straight = pretrain(images, out_dir=tmp_path / "straight", method="mim", epochs=2, **TINY)
    assert straight.history == pytest.approx(second.history, rel=1e-5)
    resumed, uninterrupted = load_file(str(second.weights)), load_file(str(straight.weights))
    for key in resumed:
        torch.testing.assert_close(resumed[key], uninterrupted[key], rtol=1e-4, atol=1e-5)
    again = pretrain(images, out_dir=tmp_path / "run", method="mim", epochs=2, **TINY)
    assert again.start_epoch == 2 and again.history == second.history  # finished: nothing left to train
    # ... and its record (where and when it ran) is left as written, not re-stamped by this machine
    assert again.info == second.info and [s["epochs"] for s in second.info["stretches"]] == [[0, 1], [1, 2]]


def test_resuming_with_other_settings_is_refused(outputs, images):
    with pytest.raises(ConfigError, match=r"other settings \(lr: 0.001 -> 0.01\).*--no-resume"):
        pretrain(images, out_dir=outputs["mim"].out_dir, method="mim", epochs=2, lr=0.01, **TINY)


def test_fcdd_trains_and_scores_with_pretrained_weights(outputs, images):
    weights = outputs["mim"].weights
    normal = images.subset(np.flatnonzero(images.labels == 0))
    detector = create("fcdd", backbone="cnn", width=4, backbone_weights=str(weights), freeze_backbone=True,
                      epochs=1, batch_size=8, device="cpu", quiet=True).fit(normal)
    scores = detector.score(images)
    assert np.isfinite(scores.image).all() and scores.maps.shape == (len(images), 32, 32)
    saved = load_file(str(weights))
    for key, value in _params(detector.network_.backbone).items():
        assert torch.equal(value, saved[key]), key  # frozen: still exactly the pretrained weights


def test_fcdd_uses_the_vit_token_grid_as_its_map(outputs, images):
    normal = images.subset(np.flatnonzero(images.labels == 0))
    detector = create("fcdd", backbone="vit_tiny", width=4, backbone_weights=str(outputs["mae"].weights),
                      epochs=1, batch_size=8, device="cpu", quiet=True).fit(normal)
    scores = detector.score(images)
    assert np.isfinite(scores.image).all() and scores.maps.shape == (len(images), 32, 32)


def test_hierarchical_init_starts_from_earlier_weights(outputs, images, tmp_path):
    earlier = outputs["mim"]
    narrow = images.subset(range(12))
    # A vanishing learning rate leaves the parameters where they started: at the earlier weights.
    result = pretrain(narrow, out_dir=tmp_path / "narrow", method="simsiam", epochs=1, lr=1e-12,
                      init_weights=earlier.out_dir, **TINY)
    assert result.info["init_weights"] == str(earlier.weights) and result.info["n_images"] == 12
    start = load_file(str(earlier.weights))
    backbone = build_backbone("cnn", 1, stride=8, width=4, weights=result.weights).module
    for key, value in _params(backbone).items():
        torch.testing.assert_close(value, start[key])


def test_init_weights_of_another_architecture_are_refused(outputs, images, tmp_path):
    with pytest.raises(ConfigError, match=r"are for backbone 'cnn', width=4, stride=8.*not backbone 'cnn', width=8"):
        pretrain(images, out_dir=tmp_path / "a", method="mim", epochs=1, init_weights=outputs["mim"].out_dir,
                 **{**TINY, "width": 8})
    lone = tmp_path / "vit.safetensors"  # no pretrain.json beside it: the factory's own check answers
    save_file(load_file(str(outputs["mae"].weights)), str(lone))
    with pytest.raises(ConfigError, match="no tensor in this file matches"):
        pretrain(images, out_dir=tmp_path / "b", method="mim", epochs=1, init_weights=lone, **TINY)
    with pytest.raises(ConfigError, match="no such weights file"):
        pretrain(images, out_dir=tmp_path / "c", method="mim", epochs=1, init_weights=tmp_path / "nope", **TINY)


def test_unknown_method_and_wrong_backbone_name_the_fix(images, tmp_path):
    with pytest.raises(ConfigError, match="unknown pretraining method 'bogus'.*mim, mae, simsiam"):
        pretrain(images, out_dir=tmp_path, method="bogus", **TINY)
    with pytest.raises(ConfigError, match="'mae' needs a ViT backbone.*vit_tiny"):
        pretrain(images, out_dir=tmp_path, method="mae", backbone="cnn", **TINY)
    with pytest.raises(ConfigError, match="batch_size=1"):
        pretrain(images, out_dir=tmp_path, method="mim", **{**TINY, "batch_size": 1})


def test_empty_data_is_a_clear_error(images, tmp_path):
    with pytest.raises(DataError, match="0 image"):
        pretrain(images.subset([]), out_dir=tmp_path, method="mim", **TINY)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        unlabelled_records(str(tmp_path / "empty"))
    with pytest.raises(DataError, match="no such folder or manifest.*magnetic_tile\\+elpv"):
        unlabelled_records(str(tmp_path / "missing"))


def test_command_reads_folders_and_manifests_without_their_val_and_test_rows(folder, tmp_path):
    records = scan_folder(folder)
    splits = ["train", "val", "test", "train_anomalous"]
    write_manifest([r.with_split(splits[i % 4]) for i, r in enumerate(records)], tmp_path / "m.csv")
    kept = unlabelled_records(str(tmp_path / "m.csv"))
    assert len(kept) == 14 and {r.split for r in kept} == {"train", "train_anomalous"}
    # '+' joins sources; an image given twice counts once.
    assert len(unlabelled_records(f"{tmp_path / 'm.csv'}+{folder}")) == len(records)
    result = pretrain_command(str(folder), tmp_path / "out", "mim", width=4, image_size=32, epochs=1,
                              batch_size=8, device="cpu", quiet=True)
    assert result.info["source"] == str(folder) and result.info["n_images"] == len(records)


@pytest.mark.realdata
def test_builtin_union_gives_training_images_only():
    records = unlabelled_records("magnetic_tile+elpv")
    assert len(records) == 571 + 80 + 905 + 80
    assert {r.split for r in records} == {"train", "train_anomalous"}


def test_vit_backbone_gives_a_token_grid_and_refuses_untileable_sizes():
    vit = build_backbone("vit_tiny", 1, stride=8, width=4)
    assert vit.out_channels == 32 and vit.stride == 8
    assert vit.module(torch.zeros(2, 1, 32, 48)).shape == (2, 32, 4, 6)
    with pytest.raises(DataError, match="multiple of 8"):
        vit.module(torch.zeros(1, 1, 30, 32))
    with pytest.raises(ConfigError, match="no published weights"):
        build_backbone("vit_tiny", weights="pretrained")


def test_augmentations_keep_shape_and_repeat_under_a_seed(images):
    pixels = images.raw_images()[:6]
    view = siamese_view(pixels, torch.Generator().manual_seed(0))
    assert view.shape == pixels.shape and view.dtype == torch.uint8 and not torch.equal(view, pixels)
    assert torch.equal(view, siamese_view(pixels, torch.Generator().manual_seed(0)))
    keep, hidden = random_masking(3, 16, 0.75, torch.Generator().manual_seed(0))
    assert keep.shape == (3, 4) and hidden.sum(dim=1).tolist() == [12, 12, 12]
    assert not hidden.gather(1, keep).any()
    mask = patch_mask(2, (32, 40), 16, 0.5, torch.Generator().manual_seed(0))
    assert mask.shape == (2, 1, 32, 40) and 0 < mask.float().mean() < 1


def test_weights_that_cover_only_part_of_the_backbone_are_reported(outputs, caplog):
    # Stride 16 adds a stage that the stride-8 weights do not have.
    backbone = build_backbone("cnn", 1, stride=16, width=4, weights=outputs["mim"].weights)
    assert "keep their random init" in caplog.text and backbone.stride == 16
