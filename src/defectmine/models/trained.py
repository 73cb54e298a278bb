"""What gradient-trained image detectors share around `fit_network`: starting a fit and batched scoring."""

from __future__ import annotations

from abc import abstractmethod

import numpy as np
import torch
from torch import nn

from defectmine.backbones import Backbone, build_backbone
from defectmine.data.dataset import ImageDataset
from defectmine.data.images import ImageSpec, normalise
from defectmine.errors import ConfigError
from defectmine.explain.upsample import gaussian_upsample
from defectmine.models.base import Detector, Scores, seed_everything
from defectmine.evaluation.selection import validation_value
from defectmine.models.training import FitResult, check_training_sets, fit_network, has_both_classes

HEATMAPS = ("native", "gradcam")
# What the progress bar calls each model-selection metric.
SELECTION_LABELS = {"auroc": "AUROC", "max_f1": "F1"}


def native_maps_at(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A detector's own maps (B, u, v) at the input `size`, float32: low-resolution maps Gaussian-upsampled;
    maps already at the input size (full-resolution decoders) kept as they are. `score` and the exported
    graph (`defectmine.export.graph`) both call this."""
    full_size = tuple(maps.shape[-2:]) == tuple(size)
    return (maps if full_size else gaussian_upsample(maps, size)).float()


class TrainedDetector(Detector):
    """A detector whose network is trained by `fit_network` and scores images batch by batch.

    Subclasses implement `_forward_scores(batch) -> (image scores (B,), maps (B, u, v))` on normalised
    channels_last batches; `score` upsamples low-resolution maps to the input size (maps already at
    the input size are kept).
    Their config derives from `training.TrainingConfig` (score_batch_size, seed, device, ...).
    Their `fit` also takes `on_validation(epoch, value)`, called after each validation during training
    (a tuner reports to its pruner there, and may raise to abandon the fit); weights are the same
    with or without it.
    """

    def _make_backbone(self, spec: ImageSpec) -> Backbone:
        """A backbone as configured (name, stride, width, weights, drop_path, depth, norm, bn_momentum),
        frozen if freeze_backbone."""
        cfg = self.config
        backbone = build_backbone(
            cfg.backbone, spec.channels, stride=cfg.stride, width=cfg.width, weights=cfg.backbone_weights,
            drop_path=cfg.drop_path, depth=cfg.depth, norm=cfg.norm, bn_momentum=cfg.bn_momentum,
        )
        if cfg.freeze_backbone:
            backbone.module.requires_grad_(False)
        return backbone

    def _start_fit(
        self, normal: ImageDataset, anomalous: ImageDataset | None, val: ImageDataset | None
    ) -> nn.Module:
        """Check the sets, seed, record the input spec and build a fresh network (also ``network_``)."""
        check_training_sets(normal, anomalous, val)
        seed_everything(self.config.seed)
        self.spec_ = normal.spec
        # channels_last: about 2x faster convolutions on CPU (oneDNN) for these small networks
        self.network_ = self._build_network(normal.spec).to(self.device, memory_format=torch.channels_last)
        return self.network_

    def _fit_network(self, loss_fn, normal: ImageDataset, anomalous: ImageDataset | None, val: ImageDataset | None, *,
                     selection: str = "auroc", description: str, on_validation=None,
                     anomaly_share: float | None = None) -> FitResult:
        """`fit_network` on the network `_start_fit` built, selecting on val by `selection` ("auroc" or
        "max_f1" of the image scores) when val has both classes; records history_, best_epoch_,
        stopped_epoch_ and synthetic_, and leaves the network in eval mode."""

        def validate() -> float:
            return validation_value(selection, val, self.score(val, maps=False).image)

        result = fit_network(
            self.network_, loss_fn, normal, anomalous, config=self.config, spec=self.spec_, device=self.device,
            anomaly_share=anomaly_share, validate=validate if has_both_classes(val) else None,
            metric=SELECTION_LABELS[selection], description=description, on_validation=on_validation,
        )
        self.history_, self.best_epoch_ = result.history, result.best_epoch
        self.stopped_epoch_, self.synthetic_ = result.stopped_epoch, result.synthetic
        self.network_.eval()
        return result

    @abstractmethod
    def _forward_scores(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(image scores (B,), maps (B, u, v)) of a normalised batch."""

    def image_scores_of(self, batch: torch.Tensor) -> torch.Tensor:
        """Image scores (B,) of a normalised batch: what Grad-CAM explains."""
        return self._forward_scores(batch)[0]

    def _flip_averaged_scores(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`_forward_scores` averaged over the identity, horizontal, vertical and both flips; each map
        flipped back before the mean, so maps stay aligned with the input."""
        images, maps = [], []
        for dims in ((), (-1,), (-2,), (-2, -1)):
            flipped = batch.flip(dims) if dims else batch
            image, low_res = self._forward_scores(flipped.contiguous(memory_format=torch.channels_last))
            images.append(image)
            maps.append(low_res.flip(dims) if dims else low_res)
        return torch.stack(images).mean(0), torch.stack(maps).mean(0)

    @torch.inference_mode()
    def score(self, images: ImageDataset | torch.Tensor, *, maps: bool = True, heatmap: str = "native") -> Scores:
        """Image scores and, unless maps=False, maps at the input size.

        heatmap: "native" (the detector's own map, Gaussian-upsampled) or "gradcam" (Grad-CAM of the
            image score at the backbone's last convolution; computed with gradients even though scoring
            runs under inference mode).
        With the config's `tta` on, native image scores and maps are the mean over the four flips of
        each image (maps flipped back first); Grad-CAM maps ignore it.
        """
        if heatmap not in HEATMAPS:
            raise ConfigError(f"heatmap={heatmap!r} is unknown. Fix: use one of {', '.join(HEATMAPS)}.")
        pixels = self._as_uint8_batch(images)
        network = self.network_
        was_training = network.training
        network.eval()
        step = self.config.score_batch_size
        native_maps = maps and heatmap == "native"
        tta = getattr(self.config, "tta", False)
        image_scores, all_maps = [], []
        for start in range(0, len(pixels), step):
            batch = normalise(pixels[start:start + step].to(self.device), self.spec_)
            image, low_res = self._flip_averaged_scores(batch) if tta else self._forward_scores(
                batch.contiguous(memory_format=torch.channels_last))
            image_scores.append(image.cpu())
            if native_maps:
                all_maps.append(native_maps_at(low_res, tuple(self.spec_.size)).cpu())
        network.train(was_training)
        image = torch.cat(image_scores).numpy() if image_scores else np.zeros(0)
        full = torch.cat(all_maps).numpy().astype(np.float32) if native_maps and all_maps else None
        if maps and heatmap == "gradcam":
            from defectmine.explain.gradcam import detector_gradcam

            full = detector_gradcam(self, pixels)
        return Scores(image=image, maps=full)
