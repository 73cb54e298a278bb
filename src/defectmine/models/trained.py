"""What gradient-trained image detectors share around `fit_network`: starting a fit and batched scoring."""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from defectmine.backbones import Backbone, build_backbone
from defectmine.data.dataset import ImageDataset
from defectmine.data.images import ImageSpec, normalise
from defectmine.errors import ConfigError
from defectmine.explain.upsample import gaussian_upsample
from defectmine.models.base import Detector, Scores, seed_everything
from defectmine.models.training import check_training_sets

HEATMAPS = ("native", "gradcam")


class TrainedDetector(Detector):
    """A detector whose network is trained by `fit_network` and scores images batch by batch.

    Subclasses implement `_forward_scores(batch) -> (image scores (B,), low-resolution maps (B, u, v))`
    on normalised channels_last batches; `score` upsamples the maps to the input size.
    Their config derives from `training.TrainingConfig` (score_batch_size, seed, device, ...).
    A subclass whose maps are already at the input size (a decoder's output) sets
    `full_resolution_maps = True`: they are kept as they are, not blurred by the upsampling.
    """

    full_resolution_maps: ClassVar[bool] = False

    def _make_backbone(self, spec: ImageSpec) -> Backbone:
        """A backbone as configured (name, stride, width, weights), frozen if freeze_backbone."""
        cfg = self.config
        backbone = build_backbone(
            cfg.backbone, spec.channels, stride=cfg.stride, width=cfg.width, weights=cfg.backbone_weights
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

    @abstractmethod
    def _forward_scores(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(image scores (B,), maps (B, u, v)) of a normalised batch."""

    def image_scores_of(self, batch: torch.Tensor) -> torch.Tensor:
        """Image scores (B,) of a normalised batch: what Grad-CAM explains."""
        return self._forward_scores(batch)[0]

    @torch.inference_mode()
    def score(self, images: ImageDataset | torch.Tensor, *, maps: bool = True, heatmap: str = "native") -> Scores:
        """Image scores and, unless maps=False, maps at the input size.

        heatmap: "native" (the detector's own map, Gaussian-upsampled) or "gradcam" (Grad-CAM of the
            image score at the backbone's last convolution; computed with gradients even though scoring
            runs under inference mode).
        """
        if heatmap not in HEATMAPS:
            raise ConfigError(f"heatmap={heatmap!r} is unknown. Fix: use one of {', '.join(HEATMAPS)}.")
        pixels = self._as_uint8_batch(images)
        network = self.network_
        was_training = network.training
        network.eval()
        step = self.config.score_batch_size
        native_maps = maps and heatmap == "native"
        image_scores, all_maps = [], []
        for start in range(0, len(pixels), step):
            batch = normalise(pixels[start:start + step].to(self.device), self.spec_)
            image, low_res = self._forward_scores(batch.contiguous(memory_format=torch.channels_last))
            image_scores.append(image.cpu())
            if native_maps:
                full_size = low_res if self.full_resolution_maps else gaussian_upsample(low_res, tuple(self.spec_.size))
                all_maps.append(full_size.cpu())
        network.train(was_training)
        image = torch.cat(image_scores).numpy() if image_scores else np.zeros(0)
        full = torch.cat(all_maps).numpy().astype(np.float32) if native_maps and all_maps else None
        if maps and heatmap == "gradcam":
            from defectmine.explain.gradcam import detector_gradcam

            full = detector_gradcam(self, pixels)
        return Scores(image=image, maps=full)
