"""Synthetic defects: a tiny diffusion model trained for a few steps (shapes, determinism, the known
region kept, save/load, the folder written) and bad inputs. No image quality is claimed here."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from defectmine.data import ImageDataset, scan_folder
from defectmine.data.images import ImageSpec
from defectmine.data.injection import defect_pool
from defectmine.errors import ConfigError

pytest.importorskip("diffusers")
from defectmine.synth import (  # noqa: E402
    DefectDiffusion, DiffusionConfig, repaint, synthesize_defects, train_diffusion, write_synthetic_defects,
)
from defectmine.synth.run import training_set  # noqa: E402

TINY = DiffusionConfig(image_size=32, block_channels=(16, 16), train_steps=3, batch_size=4, timesteps=100)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from defectmine.data.synthetic import write_synthetic_folder

    root = write_synthetic_folder(tmp_path_factory.mktemp("synth") / "data", n_normal=8, n_anomalous=4)
    ds = ImageDataset(scan_folder(root), ImageSpec(size=(32, 32), channels=1))
    normal, anomalous = ds.subset(np.flatnonzero(ds.labels == 0)), ds.subset(np.flatnonzero(ds.labels == 1))
    images, labels, classes = training_set(normal, anomalous)
    model = train_diffusion(images, labels, classes, TINY)
    return normal, anomalous, model


def test_training_set_labels_defects_by_class(data):
    normal, anomalous, model = data
    images, labels, classes = training_set(normal, anomalous)
    assert classes == ("normal", "scratch", "spot")
    assert images.shape == (12, 1, 32, 32)
    assert labels.tolist() == [0] * 8 + [classes.index(r.defect_class) for r in anomalous.records]


def test_repaint_keeps_the_image_outside_the_mask_and_is_seeded(data):
    normal, _, model = data
    images = normal.raw_images()[:2]
    masks = torch.zeros(2, 32, 32, dtype=torch.bool)
    masks[:, 8:16, 8:20] = True
    a = repaint(model, images, masks, "spot", steps=3, resample=2, seed=3)
    b = repaint(model, images, masks, "spot", steps=3, resample=2, seed=3)
    assert a.dtype == torch.uint8 and torch.equal(a, b)
    assert torch.equal(a[:, 0][~masks], images[:, 0][~masks])
    assert not torch.equal(a[:, 0][masks], images[:, 0][masks])


def test_synthesize_defects_places_real_shapes_and_saves(data, tmp_path):
    normal, anomalous, model = data
    pool = defect_pool(anomalous.raw_images(), anomalous.class_masks(), anomalous.classes)
    images, masks = synthesize_defects(model, normal.raw_images().numpy(), pool, "scratch", 3, steps=2, strength=0.5)
    assert images.shape == (3, 1, 32, 32) and masks.shape == (3, 32, 32)
    assert all((m == anomalous.classes.index("scratch")).any() for m in masks)
    paths = write_synthetic_defects(tmp_path, "scratch", images, masks)
    write_synthetic_defects(tmp_path, "scratch", images[:1], masks[:1], prefix="other")
    (tmp_path / "normal").mkdir()  # the folder layout needs normal images to be a data set
    (tmp_path / "anomalous" / "scratch" / "other_0000.png").rename(tmp_path / "normal" / "n.png")
    (tmp_path / "masks" / "anomalous" / "scratch" / "other_0000.png").unlink()
    read = ImageDataset(scan_folder(tmp_path), ImageSpec(size=(32, 32), channels=1))
    assert len(paths) == 3 and read.classes == ("background", "scratch") and read.masks()[read.labels == 1].any(axis=(1, 2)).all()
    loaded = DefectDiffusion.load(model.save(tmp_path / "model"))
    assert loaded.classes == model.classes
    for a, b in zip(loaded.unet.parameters(), model.unet.parameters()):
        assert torch.equal(a, b)


def test_bad_inputs_are_refused(data, tmp_path, monkeypatch):
    normal, anomalous, model = data
    with pytest.raises(ConfigError, match="multiple of 4"):
        DiffusionConfig(image_size=30, block_channels=(16, 16, 16))
    with pytest.raises(ConfigError, match="not one the diffusion model knows"):
        repaint(model, normal.raw_images()[:1], torch.ones(1, 32, 32), "crack", steps=2)
    with pytest.raises(ConfigError, match="model's size"):
        repaint(model, torch.zeros(1, 1, 16, 16, dtype=torch.uint8), torch.ones(1, 16, 16), "spot", steps=2)
    with pytest.raises(ConfigError, match="synthesis model"):
        DefectDiffusion.load(tmp_path)
    with pytest.raises(ConfigError, match="one label"):
        train_diffusion(normal.raw_images(), [0], ("normal",), TINY)
    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(ConfigError, match="pip install"):
        train_diffusion(normal.raw_images(), np.zeros(len(normal)), ("normal",), TINY)
