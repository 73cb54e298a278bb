"""SegDec (mixed supervision): masks where known, image labels where not, DLI into normal images."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from defectmine.data import ImageDataset, ImageSpec, scan_folder, write_synthetic_folder
from defectmine.errors import ConfigError
from defectmine.models.registry import create
from defectmine.models.segdec import SegDec, _TrainingSources

SPEC = ImageSpec(size=(32, 32), channels=1)
FAST = {"epochs": 16, "width": 4, "batch_size": 16, "lr": 3e-3, "eval_every": 4, "device": "cpu", "quiet": True}


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = write_synthetic_folder(tmp_path_factory.mktemp("segdec"), n_normal=40, n_anomalous=16, size=32, seed=3)
    records = scan_folder(root)
    normal = [r for r in records if not r.is_anomalous]
    anomalous = [r for r in records if r.is_anomalous]
    train = anomalous[::4]
    held = [r for r in anomalous if r not in train]
    return {
        "normal": ImageDataset(normal[:28], SPEC),
        "anomalous": ImageDataset(train, SPEC),
        "unmasked": ImageDataset([replace(r, mask=None) for r in train], SPEC),
        "val": ImageDataset([r.with_split("val") for r in normal[28:34] + held[::2]], SPEC),
        "test": ImageDataset([r.with_split("test") for r in normal[34:] + held[1::2]], SPEC),
    }


def _inside_outside(detector, test):
    scores = detector.score(test)
    masks = test.masks()
    rows = [i for i in range(len(test)) if masks[i].any()]
    inside = np.mean([scores.maps[i][masks[i]].mean() for i in rows])
    outside = np.mean([scores.maps[i][~masks[i]].mean() for i in rows])
    return inside, outside, scores


def test_masks_teach_full_resolution_maps(sets):
    detector = SegDec(**FAST).fit(sets["normal"], sets["anomalous"], val=sets["val"])
    inside, outside, scores = _inside_outside(detector, sets["test"])
    assert scores.maps.shape == (len(sets["test"]), 32, 32)
    assert inside > 2 * outside  # the per-pixel defect probability lies on the defect
    assert detector.n_with_masks_ == len(sets["anomalous"])


def test_anomalies_without_masks_teach_the_decision_only(sets):
    assert not sets["unmasked"].mask_available.any()
    detector = SegDec(**FAST).fit(sets["normal"], sets["unmasked"], val=sets["val"])
    assert detector.n_with_masks_ == 0
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(sets["test"].labels, detector.score(sets["test"], maps=False).image) > 0.8


def test_without_labelled_anomalies_synthetic_ones_train_the_decision(sets):
    detector = SegDec(**{**FAST, "epochs": 2}).fit(sets["normal"], val=sets["val"])
    assert detector.synthetic_ == "cutpaste"


def test_injected_defects_come_with_their_masks_and_labels(sets):
    detector = SegDec(**{**FAST, "keep_clean": 0.0})
    sources = _TrainingSources.build(sets["normal"], sets["anomalous"], detector.config, torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    images, masks, known, labels = next(iter(sources.batches(generator, SPEC)))
    assert known.all()  # every anomaly of this set has its mask; normal masks are known (background)
    # keep_clean 0: every normal image of the batch received a pasted defect, so every label is 1
    assert labels.eq(1).all()
    assert bool((masks.flatten(1) > 0).any(dim=1).all())
    assert masks.max() == 1  # binary pixel targets


def test_keep_clean_one_leaves_normal_images_clean(sets):
    detector = SegDec(**{**FAST, "keep_clean": 1.0})
    sources = _TrainingSources.build(sets["normal"], sets["anomalous"], detector.config, torch.device("cpu"))
    images, masks, known, labels = next(iter(sources.batches(torch.Generator().manual_seed(0), SPEC)))
    n_normal = int((labels == 0).sum())
    assert n_normal > 0 and masks[labels == 0].sum() == 0


@pytest.mark.parametrize("params, message", [
    ({"seg_loss": "nope"}, "segmentation loss"),
    ({"seg_loss_params": {"gamma": 2.0}}, "takes no parameter"),
    ({"selection": "pixel"}, "selection"),
    ({"image_score": "best"}, "image_score"),
    ({"keep_clean": 2.0}, "keep_clean"),
    ({"backbone": "vit_tiny"}, "feature pyramid"),
])
def test_bad_options_are_named(params, message):
    with pytest.raises(ConfigError, match=message):
        create("segdec", **params)


def test_image_sides_must_fit_the_encoder_depth(sets):
    odd = ImageDataset(sets["normal"].records[:4], ImageSpec(size=(36, 36), channels=1))
    with pytest.raises(ConfigError, match="multiples of 8"):
        SegDec(**FAST).fit(odd)
