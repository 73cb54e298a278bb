"""One contract test for every segmenter, encoder and loss, on tiny synthetic images with class masks."""

import numpy as np
import pytest
import torch

from defectmine.backbones import build_backbone
from defectmine.data import ImageDataset, ImageSpec
from defectmine.errors import ConfigError, DataError, NotFittedError
from defectmine.evaluation.segmentation import segmentation_metrics
from defectmine.segment import SEGMENTATION_LOSSES, SEGMENTERS, create_segmenter, load_segmenter
from defectmine.segment.augment import flips_and_rotations
from defectmine.segment.sampling import TrainingPool, segmentation_batches

SPEC = ImageSpec(size=(32, 32), channels=1)
CLASSES = ("background", "bright", "dark")
# Ours and the paper's three ℓ-encoders.
ENCODERS = ("cnn", "resnet18", "mobileone_s1", "resnest50d")
# Small, fast settings per segmenter; a new segmenter adds its entry here.
FAST_PARAMS = {"unet": {"epochs": 1, "batch_size": 8, "device": "cpu", "quiet": True}}


def squares(n, split, seed=0, size=32, spec=SPEC):
    """Gray noise; every third image normal, the others a bright (class 1) or dark (class 2) square."""
    rng = np.random.default_rng(seed)
    images = rng.integers(90, 140, (n, spec.channels, size, size)).astype(np.uint8)
    masks = np.zeros((n, size, size), dtype=np.uint8)
    for i in range(n):
        cls = i % 3
        if cls:
            side = int(rng.integers(size // 5, size // 3))
            y, x = (int(v) for v in rng.integers(1, size - side - 1, 2))
            images[i, :, y:y + side, x:x + side] = 240 if cls == 1 else 10
            masks[i, y:y + side, x:x + side] = cls
    labels = [int(i % 3 > 0) for i in range(n)]
    return ImageDataset.from_tensor(torch.from_numpy(images), spec, labels, torch.from_numpy(masks), classes=CLASSES,
                                    split=split)


@pytest.fixture(scope="module")
def sets():
    return {"train": squares(24, "train", 0), "val": squares(9, "val", 1), "test": squares(9, "test", 2)}


@pytest.fixture(scope="module", params=ENCODERS)
def fitted(request, sets):
    segmenter = create_segmenter("unet", encoder=request.param, **FAST_PARAMS["unet"])
    return segmenter.fit(sets["train"], val=sets["val"])


def test_predict_gives_finite_class_maps_background_first(fitted, sets):
    maps = fitted.predict(sets["test"])
    assert maps.classes == CLASSES and maps.probabilities.shape == (9, 3, 32, 32)
    assert np.isfinite(maps.probabilities).all()
    np.testing.assert_allclose(maps.probabilities[:, 0], 1 - maps.probabilities[:, 1:].max(axis=1), atol=1e-6)
    np.testing.assert_allclose(maps.anomaly_map("background"), maps.anomaly_map("max"), atol=1e-6)
    labels = fitted.predict_classes(sets["test"])
    assert labels.shape == (9, 32, 32) and labels.min() >= 0 and labels.max() <= 2
    assert 0 < fitted.threshold_ < 1 and fitted.val_metric_["at_default"] is not None


def test_save_load_gives_the_same_predictions(fitted, sets, tmp_path):
    fitted.save(tmp_path / "model")
    loaded = load_segmenter(tmp_path / "model")
    np.testing.assert_allclose(loaded.predict(sets["test"]).probabilities, fitted.predict(sets["test"]).probabilities,
                               rtol=1e-5, atol=1e-6)
    assert loaded.threshold_ == fitted.threshold_ and loaded.classes_ == CLASSES
    assert loaded.get_config() == fitted.get_config()
    via_tensor = loaded.predict(sets["test"].raw_images()).probabilities
    np.testing.assert_allclose(via_tensor, fitted.predict(sets["test"]).probabilities, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("loss", sorted(SEGMENTATION_LOSSES))
def test_every_loss_trains(loss, sets):
    segmenter = create_segmenter("unet", encoder="cnn", loss=loss, loss_params={"per_image_dice": True},
                                 **FAST_PARAMS["unet"])
    segmenter.fit(sets["train"])
    assert np.isfinite(segmenter.history_).all() and segmenter.threshold_ == 0.5 and segmenter.val_metric_ is None
    assert np.isfinite(segmenter.predict(sets["test"]).probabilities).all()
    assert segmenter.pixel_counts_[0] > segmenter.pixel_counts_[1] > 0


def test_easy_squares_reach_iou_well_above_chance(sets):
    segmenter = create_segmenter("unet", encoder="cnn", width=8, decoder_channels=[32, 16, 8], epochs=8, batch_size=4,
                                 defect_share=None, lr=3e-3, seed=0, device="cpu", quiet=True)
    segmenter.fit(sets["train"], val=sets["val"])
    test = sets["test"]
    metrics = segmentation_metrics(segmenter.predict_classes(test), test.class_masks(), CLASSES)
    # chance (random labels at the defect share of ~6 % of the pixels) is an IoU of a few percent
    assert metrics["mean_iou"] > 0.5, metrics
    assert segmenter.best_epoch_ is not None
    assert segmenter.val_metric_["at_threshold"] >= segmenter.val_metric_["at_default"]


@pytest.mark.parametrize("name", sorted(SEGMENTERS))
def test_predict_before_fit_is_a_clear_error(name, sets):
    with pytest.raises(NotFittedError, match="before predict"):
        create_segmenter(name).predict(sets["test"])


@pytest.mark.parametrize(
    "params, message",
    [
        ({"bogus": 1}, "unknown option.*bogus"),
        ({"encoder": "nope"}, "unknown encoder 'nope'.*resnet18"),
        ({"encoder": "vit_tiny"}, "no feature pyramid"),
        ({"encoder": "cnn", "encoder_weights": "pretrained"}, "no published weights"),
        ({"loss": "nope"}, "unknown segmentation loss 'nope'; known: bce_dice"),
        ({"loss": "focal", "loss_params": {"gamma": -1}}, "gamma=-1"),
        ({"loss": "weighted_ce", "loss_params": {"pixel_counts": [1, 2, 3]}}, "computes from the training masks"),
        ({"decoder_channels": [64, 32]}, "decoder_channels=.* 3 positive"),
        ({"epochs": "2"}, "epochs='2' must be a whole number"),
        ({"selection_metric": "auroc"}, "selection_metric='auroc'.*mean_iou"),
        ({"defect_share": 1.0}, "defect_share=1.0 must be in"),
    ],
)
def test_bad_options_are_named(params, message):
    with pytest.raises(ConfigError, match=message):
        create_segmenter("unet", **params)


def test_unknown_segmenter_lists_known_ones():
    with pytest.raises(ConfigError, match="known: unet"):
        create_segmenter("nope")


def test_val_with_test_records_is_refused(sets):
    with pytest.raises(ConfigError, match="validation images only.*'test'"):
        create_segmenter("unet", encoder="cnn", **FAST_PARAMS["unet"]).fit(sets["train"], val=sets["test"])


def test_training_needs_defect_pixels_and_a_fitting_image_size(sets):
    normal_only = sets["train"].subset([0, 3, 6])
    with pytest.raises(DataError, match="no defect class|no training image .* has a defect pixel"):
        create_segmenter("unet", encoder="cnn", **FAST_PARAMS["unet"]).fit(normal_only)
    odd = squares(6, "train", size=28, spec=ImageSpec(size=(28, 28), channels=1))
    with pytest.raises(DataError, match="multiple of 8"):
        create_segmenter("unet", encoder="cnn", **FAST_PARAMS["unet"]).fit(odd)


def test_joint_flips_and_turns_keep_masks_on_their_pixels():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8)
    masks = (images[:, 0] > 128).to(torch.int64)
    out_images, out_masks = flips_and_rotations(images, masks, generator)
    assert torch.equal(out_masks, (out_images[:, 0] > 128).to(torch.int64))
    assert not torch.equal(out_images, images)
    wide = torch.randint(0, 256, (8, 1, 4, 8), dtype=torch.uint8)
    assert flips_and_rotations(wide, wide[:, 0].long(), generator)[0].shape == wide.shape


def test_defect_share_oversamples_defective_images(sets):
    pool = TrainingPool.from_dataset(sets["train"], torch.device("cpu"))
    assert len(pool.defective) == 16 and len(pool.clean) == 8
    batches, steps = segmentation_batches(pool, spec=SPEC, batch_size=8, defect_share=0.5, augment=False,
                                          augment_batch=None, generator=torch.Generator().manual_seed(0))
    epoch = list(batches())
    assert len(epoch) == steps == 2
    assert all((masks.flatten(1) > 0).any(dim=1).sum() == 4 for _, masks in epoch)


def test_augment_batch_hook_sees_raw_batches_and_must_keep_the_contract(sets):
    calls = []

    def hook(images, masks, generator):
        calls.append((images.dtype, masks.dtype, tuple(images.shape)))
        return images, torch.zeros_like(masks)  # erase every defect: the network learns "no defect"

    segmenter = create_segmenter("unet", encoder="cnn", **{**FAST_PARAMS["unet"], "epochs": 2, "lr": 1e-2})
    segmenter.fit(sets["train"], augment_batch=hook)
    assert calls and calls[0][:2] == (torch.uint8, torch.int64) and calls[0][2][1:] == (1, 32, 32)
    with pytest.raises(DataError, match="augment_batch must return"):
        segmenter.fit(sets["train"], augment_batch=lambda images, masks, generator: images)


def test_encoders_start_from_local_weights_files(tmp_path):
    from safetensors.torch import save_file

    from defectmine.segment.networks import build_unet

    # a stride-8 backbone, as `defectmine pretrain` writes it by default, is the whole ℓ-encoder
    for name, inner in (("cnn", "cnn"), ("resnet18", None)):
        backbone = build_backbone(name, 1, stride=8, width=8).module
        path = tmp_path / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in backbone.state_dict().items()}, str(path))
        encoder = build_unet(name, 2, 1, width=8, weights=path).encoder
        encoder_state = (getattr(encoder, inner) if inner else encoder).state_dict()
        assert encoder_state.keys() == backbone.state_dict().keys()
        assert all(torch.equal(encoder_state[k], v) for k, v in backbone.state_dict().items()), name


def test_loading_a_folder_that_is_not_a_segmenter_is_refused(fitted, tmp_path):
    folder = fitted.save(tmp_path / "model")
    config = (folder / "config.json").read_text().replace('"segmenter": "unet"', '"segmenter": "fpn"')
    (folder / "config.json").write_text(config)
    with pytest.raises(DataError, match="unknown segmenter 'fpn'"):
        load_segmenter(folder)
    (folder / "config.json").write_text(config.replace('"segmenter": "fpn",', ""))
    with pytest.raises(DataError, match="not a segmenter"):
        load_segmenter(folder)
