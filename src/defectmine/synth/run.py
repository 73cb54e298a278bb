"""`defectmine synthesize`: train (or load) the diffusion model on a data set's training split, then
write N synthetic image/mask pairs per defect class into the folder layout, plus a grid of samples."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from defectmine.data.dataset import ImageDataset
from defectmine.data.injection import defect_pool
from defectmine.errors import ConfigError, DataError
from defectmine.explain.overlay import grid
from defectmine.report.files import save_png
from defectmine.synth.diffusion import DefectDiffusion, DiffusionConfig, train_diffusion
from defectmine.synth.inpaint import class_names, synthesize_defects
from defectmine.synth.output import write_synthetic_defects


def training_set(normal: ImageDataset, anomalous: ImageDataset | None) -> tuple[torch.Tensor, np.ndarray, tuple[str, ...]]:
    """Images, class labels (0 normal, c = defect class c of `normal.classes`) and the model's classes."""
    classes = class_names(normal.classes)
    images, labels = [normal.raw_images()], [np.zeros(len(normal), dtype=np.int64)]
    if anomalous is not None and len(anomalous):
        images.append(anomalous.raw_images())
        labels.append(np.array([normal.classes.index(r.defect_class) if r.defect_class in normal.classes else 0
                                for r in anomalous.records], dtype=np.int64))
    return torch.cat(images), np.concatenate(labels), classes


def fit_or_load(normal: ImageDataset, anomalous: ImageDataset | None, config: DiffusionConfig,
                model: Path | None, *, device: str = "cpu", quiet: bool = True) -> DefectDiffusion:
    if model is not None:
        return DefectDiffusion.load(model, device=device)
    images, labels, classes = training_set(normal, anomalous)
    return train_diffusion(images, labels, classes, config, device=device, quiet=quiet)


def sample_grid(images: np.ndarray, masks: np.ndarray, n: int = 16, side: int = 128) -> np.ndarray:
    """An RGB grid of the first n samples, enlarged to `side` pixels, each with its mask outlined (green)."""
    import cv2

    from defectmine.explain.overlay import as_rgb_uint8
    from defectmine.report.gallery import mask_outline

    def enlarge(a: np.ndarray, interpolation: int) -> np.ndarray:
        return cv2.resize(a, (side, side), interpolation=interpolation)

    tiles = [mask_outline(enlarge(as_rgb_uint8(im), cv2.INTER_NEAREST), enlarge((m > 0).astype(np.uint8), cv2.INTER_NEAREST) > 0)
             for im, m in zip(images[:n], masks[:n])]
    return grid(tiles, ncols=8)


def synthesize_folder(normal: ImageDataset, anomalous: ImageDataset | None, out: Path, *, n: int,
                      classes: Sequence[str] | None, config: DiffusionConfig, model: Path | None = None,
                      steps: int = 25, resample: int = 1, strength: float = 1.0, device: str = "cpu",
                      quiet: bool = True) -> dict:
    """Write n pairs per class under out/ (anomalous/<class>/, masks/anomalous/<class>/), the model
    (out/model/, when trained here), samples.png and synthesize.json; returns that summary."""
    if anomalous is None or not len(anomalous) or not anomalous.has_masks:
        raise DataError("synthesize needs labelled training defects with masks (their shapes are painted). "
                        "Fix: give data with anomalous/<class>/ images and masks/, and k > 0.")
    out = Path(out)
    diffusion = fit_or_load(normal, anomalous, config, model, device=device, quiet=quiet)
    if model is None:
        diffusion.save(out / "model")
    pool = defect_pool(anomalous.raw_images(), anomalous.class_masks(), anomalous.classes)
    wanted = list(classes) if classes else [c for c, crops in zip(pool.classes[1:], pool.crops[1:]) if crops]
    unknown = [c for c in wanted if c not in pool.classes]
    if unknown:
        raise ConfigError(f"--classes {', '.join(unknown)}: not defect classes of the data. Fix: use some of "
                          f"{', '.join(pool.classes[1:])}.")
    size = (config.image_size, config.image_size)
    if normal.spec.size != size:
        raise ConfigError(f"images are {normal.spec.size} but the diffusion model makes {size}. Fix: use one image size.")
    summary, first = {"n_per_class": n, "classes": {}, "steps": steps, "resample": resample, "strength": strength}, None
    for k, name in enumerate(wanted):
        images, masks = synthesize_defects(diffusion, normal.raw_images().numpy(), pool, name, n, steps=steps,
                                           resample=resample, strength=strength, seed=config.seed + 1000 * k)
        summary["classes"][name] = len(write_synthetic_defects(out, name, images, masks))
        first = (images, masks) if first is None else first
    save_png(out / "samples.png", sample_grid(*first))
    (out / "synthesize.json").write_text(json.dumps(summary, indent=2))
    return summary
