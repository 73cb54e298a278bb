"""What every segmenter shares: fit on class masks, predict per-class maps, save and load.

The vocabulary of detectors (sklearn's): ``__init__`` only stores validated hyperparameters, `fit`
returns self, learned state lives in attributes ending in ``_``, `predict` before `fit` is a clear
error, and a model is a folder of config.json + model.safetensors (never pickles).

Networks output one logit per defect class (C sigmoids, as in the DLI paper); the background is
"no class on". `predict` returns `ClassMaps` of C + 1 channels: channel 0, the background, is
1 - max_c p_c, so that ``anomaly_map("background")`` and ``anomaly_map("max")`` agree (up to float
rounding) and a threshold t marks a pixel as a defect when its most probable class reaches t
(``ClassMaps.class_index(t, how="max")``, which is what `predict_classes` uses).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from defectmine.core.results import ClassMaps
from defectmine.data.dataset import ImageDataset
from defectmine.data.images import ImageSpec, normalise
from defectmine.errors import ConfigError, DataError, NotFittedError
from defectmine.evaluation.segmentation import (
    DEFAULT_THRESHOLD,
    segmentation_threshold_on_val,
    segmentation_value_on_val,
)
from defectmine.evaluation.selection import check_val_only
from defectmine.models.base import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    load_weights,
    read_model_document,
    resolve_device,
    seed_everything,
    write_model_folder,
)
from defectmine.models.params import build_config
from defectmine.models.optim import make_optimizer
from defectmine.models.training import BestState, select_on_val, train_epochs
from defectmine.segment.config import SegmenterConfig
from defectmine.segment.sampling import TrainingPool, segmentation_batches

log = logging.getLogger(__name__)

# (images uint8 (B, C, H, W), class masks int64 (B, H, W), generator) -> the same, changed: the hook
# through which batch-level augmentation (Dynamic Label Injection) enters training.
AugmentBatch = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


class Segmenter(ABC):
    """Base class of all segmenters: ``UNet(encoder="resnet18").fit(train, val=val).predict(test)``.

    Subclasses set ``name`` and ``Config`` (a `SegmenterConfig`) and implement ``_build_network``.
    Learned state: ``network_``, ``spec_``, ``classes_`` (background first), ``pixel_counts_`` (training
    pixels per class), ``threshold_`` (val-chosen, else the paper's 0.5), ``val_metric_`` (the
    selection metric on val at ``threshold_`` and at 0.5; None without val), ``best_epoch_`` and
    ``best_val_`` (model selection at 0.5; None without it), ``history_`` (mean loss per epoch).
    """

    name: ClassVar[str]
    Config: ClassVar[type[SegmenterConfig]]

    def __init__(self, **params: Any):
        self.config = build_config(self.name, self.Config, params)
        self.network_: nn.Module | None = None
        self.spec_: ImageSpec | None = None
        self.classes_: tuple[str, ...] | None = None

    @abstractmethod
    def _build_network(self, spec: ImageSpec, n_classes: int) -> nn.Module:
        """The untrained network: (N, spec.channels, H, W) -> logits (N, n_classes, H, W)."""

    def get_config(self) -> dict:
        """The keyword arguments that rebuild this segmenter."""
        return asdict(self.config)

    @property
    def device(self) -> torch.device:
        return resolve_device(self.config.device)

    # -- fit -----------------------------------------------------------------------------------
    def fit(self, train: ImageDataset, *, val: ImageDataset | None = None, augment_batch: AugmentBatch | None = None):
        """Learn per-class maps from `train`'s class masks (defect-free images count as all background).

        val: validation images (split "val" only) for model selection and the threshold.
        augment_batch: optional hook applied to every training batch after flips and turns (see
            `AugmentBatch`); it must return images and masks of the shapes and types it was given.
        Returns self.
        """
        cfg = self.config
        _check_sets(self.name, train, val)
        seed_everything(cfg.seed)
        device = self.device
        network = self._build_network(train.spec, len(train.classes) - 1)
        _check_size(self.name, train.spec, getattr(network, "stride", 1))
        pool = TrainingPool.from_dataset(train, device)
        self.spec_, self.classes_, self.pixel_counts_ = train.spec, train.classes, pool.pixel_counts
        # channels_last: faster convolutions on CPU (oneDNN), as for detectors
        self.network_ = network.to(device, memory_format=torch.channels_last)
        loss = cfg.loss_function(pool.pixel_counts)
        generator = torch.Generator().manual_seed(cfg.seed)
        batches, steps = segmentation_batches(
            pool, spec=train.spec, batch_size=cfg.batch_size, defect_share=cfg.defect_share, augment=cfg.augment,
            augment_batch=augment_batch, generator=generator,
        )
        optimizer, scheduler = make_optimizer(self.network_, lr=cfg.lr, weight_decay=cfg.weight_decay, epochs=cfg.epochs)
        usable_val = _has_defects(val)
        if val is not None and not usable_val:
            log.warning("%s: the val set has no defect pixel with a known mask; keeping the last epoch and "
                        "the threshold %.2f", self.name, DEFAULT_THRESHOLD)

        def validate() -> float:
            return segmentation_value_on_val(cfg.selection_metric, self.predict(val), val, DEFAULT_THRESHOLD)

        best = BestState()
        on_epoch_end = select_on_val(self.network_, best, validate if usable_val else None, every=cfg.eval_every,
                                     epochs=cfg.epochs, metric=cfg.selection_metric, patience=cfg.patience)
        self.history_ = train_epochs(
            self.network_, lambda model, batch: loss(model(batch[0]), batch[1]), batches, optimizer, cfg.epochs,
            scheduler=scheduler, steps_per_epoch=steps, on_epoch_end=on_epoch_end,
            should_stop=lambda: best.stopped_epoch is not None,
            description=f"{self.name} ({self._summary()})", quiet=cfg.quiet,
        )
        best.restore(self.network_)
        self.network_.eval()
        self.best_epoch_ = best.epoch
        self.stopped_epoch_ = best.stopped_epoch
        self.best_val_ = best.value if best.epoch is not None else None
        self.threshold_, self.val_metric_ = DEFAULT_THRESHOLD, None
        if usable_val:
            chosen = segmentation_threshold_on_val(self.predict(val), val, metric=cfg.selection_metric)
            if cfg.tune_threshold:
                self.threshold_ = chosen.threshold
            self.val_metric_ = {
                "metric": cfg.selection_metric,
                "threshold": self.threshold_,
                "at_threshold": chosen.value if cfg.tune_threshold else chosen.default_value,
                "at_default": chosen.default_value,
            }
        return self

    def _summary(self) -> str:
        return self.config.loss

    # -- predict -------------------------------------------------------------------------------
    @torch.inference_mode()
    def predict(self, images: ImageDataset | torch.Tensor) -> ClassMaps:
        """Per-class probability maps (N, C + 1, H, W) at the input size, the background first.

        images: an ImageDataset prepared with the training spec, or a uint8 tensor (N, C, H, W) at it.
        """
        pixels = self._pixels(images)
        network, device, step = self.network_, self.device, self.config.predict_batch_size
        was_training = network.training
        network.eval()
        n_defect = len(self.classes_) - 1
        out = np.zeros((len(pixels), n_defect + 1, *self.spec_.size), dtype=np.float32)
        for start in range(0, len(pixels), step):
            batch = normalise(pixels[start:start + step].to(device), self.spec_)
            probabilities = torch.sigmoid(network(batch.contiguous(memory_format=torch.channels_last)).float())
            background = 1.0 - probabilities.amax(dim=1, keepdim=True)
            out[start:start + step] = torch.cat([background, probabilities], dim=1).cpu().numpy()
        network.train(was_training)
        return ClassMaps(out, self.classes_)

    def predict_classes(self, images: ImageDataset | torch.Tensor, threshold: float | None = None) -> np.ndarray:
        """(N, H, W) int64 class-index maps (0 = background) at `threshold` (default ``threshold_``)."""
        maps = self.predict(images)
        return maps.class_index(self.threshold_ if threshold is None else threshold, how="max")

    def _check_fitted(self) -> None:
        if self.network_ is None or self.spec_ is None:
            raise NotFittedError(f"{self.name}: call fit(...) or load(...) before predict(...).")

    def _pixels(self, images: ImageDataset | torch.Tensor) -> torch.Tensor:
        """The uint8 (N, C, H, W) pixels to predict, checked against the training spec."""
        self._check_fitted()
        if isinstance(images, ImageDataset):
            if images.spec != self.spec_:
                raise DataError(f"{self.name}: images were prepared with {images.spec} but the model was trained "
                                f"with {self.spec_}. Fix: load them with the model's image spec.")
            return images.raw_images()
        expected = (self.spec_.channels, *self.spec_.size)
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or tuple(images.shape[1:]) != expected:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise DataError(f"{self.name}: predict() takes an ImageDataset or a uint8 tensor "
                            f"(N, {', '.join(map(str, expected))}); got {shape}.")
        return images

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: Path, *, metadata: dict | None = None) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into the folder `path` (as detectors do).

        `metadata` (JSON-ready) is stored as it is in config.json.
        """
        self._check_fitted()
        return write_model_folder(path, self.network_, {
            # "detector" is the key every model folder has (models.base.read_model_document checks it);
            # "segmenter" says which registry to load it from.
            "detector": self.name, "segmenter": self.name, "config": self.get_config(),
            "spec": self.spec_.to_dict(), "state": self._state(), "metadata": dict(metadata or {}),
        })

    def _state(self) -> dict:
        return {
            "classes": list(self.classes_),
            "pixel_counts": self.pixel_counts_,
            "threshold": self.threshold_,
            "val_metric": self.val_metric_,
            "best_epoch": self.best_epoch_,
            "best_val": self.best_val_,
            "history": self.history_,
        }

    @classmethod
    def load(cls, path: Path) -> "Segmenter":
        """Rebuild a segmenter saved with ``save``; a broken folder raises one DataError naming the file."""
        path = Path(path)
        document = read_model_document(path)
        config_path = path / CONFIG_FILE
        if document.get("segmenter") != cls.name:
            kind = (f"segmenter {document['segmenter']!r}" if "segmenter" in document
                    else f"detector {document['detector']!r}")
            raise DataError(f"{config_path}: holds a {kind} model, not the segmenter {cls.name!r}.")
        # The weights come from model.safetensors: never re-read (or download) encoder weights.
        params = {**document["config"], **{key: None for key in cls.Config.weight_options}}
        state = document.get("state")
        try:
            segmenter = cls(**params)
            segmenter.spec_ = ImageSpec.from_dict(document["spec"])
            segmenter.classes_ = tuple(state["classes"])
            segmenter._set_state(state)
        except (ConfigError, TypeError, ValueError, KeyError) as err:
            raise DataError(f"{config_path}: its settings cannot rebuild the model ({err!r}). "
                            "Fix: re-save the model, or fit it again.") from None
        network = segmenter._build_network(segmenter.spec_, len(segmenter.classes_) - 1)
        load_weights(network, path / WEIGHTS_FILE)
        segmenter.network_ = network.to(segmenter.device, memory_format=torch.channels_last).eval()
        return segmenter

    def _set_state(self, state: dict) -> None:
        self.pixel_counts_ = state.get("pixel_counts")
        self.threshold_ = float(state["threshold"])
        self.val_metric_ = state.get("val_metric")
        self.best_epoch_ = state.get("best_epoch")
        self.best_val_ = state.get("best_val")
        self.history_ = state.get("history", [])


def _check_sets(name: str, train: ImageDataset, val: ImageDataset | None) -> None:
    """DataError / ConfigError unless train has >= 2 images and a defect class, and val fits it."""
    if not isinstance(train, ImageDataset) or len(train) < 2:
        raise DataError(f"{name}: fit needs an ImageDataset of at least 2 training images with class masks.")
    if len(train.classes) < 2:
        raise DataError(f"{name}: the training set has no defect class (classes {train.classes}). "
                        "Fix: include anomalous images with masks.")
    if val is None:
        return
    check_val_only(val, f"model selection ({name}'s val set)")
    if val.spec != train.spec:
        raise DataError(f"{name}: the val set was prepared with {val.spec}, the training set with {train.spec}.")
    if tuple(val.classes) != tuple(train.classes):
        raise DataError(f"{name}: the val set indexes the classes {val.classes}, the training set {train.classes}. "
                        "Fix: build every split's dataset with classes=class_list(all records).")


def _check_size(name: str, spec: ImageSpec, stride: int) -> None:
    height, width = spec.size
    if height % stride or width % stride:
        raise DataError(f"{name}: images of {height}x{width} pixels do not fit the network's {stride}x downsampling. "
                        f"Fix: use an image size that is a multiple of {stride}.")


def _has_defects(val: ImageDataset | None) -> bool:
    """True when val holds a defect pixel on an image whose mask is known (selection needs one)."""
    if val is None or not len(val):
        return False
    known = val.mask_available
    return bool(known.any() and val.subset(np.flatnonzero(known)).masks().any())
