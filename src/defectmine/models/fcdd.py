"""Deeper FCDD (Yasuno et al., deeper-FCDD damage vision mining; Liznerski et al., FCDD).

A fully convolutional backbone maps an image to a 1-channel map A; H = pseudo-Huber(A) is the
anomaly map, its mean the image score (equation 4, up to the constant 1/uv). The loss (equation 3)
uses labelled anomalies when given and is one-class without them; with none, synthetic anomalies
stand in, as FCDD's authors do with confetti noise and outlier exposure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from defectmine.data.dataset import ImageDataset
from defectmine.data.images import ImageSpec
from defectmine.errors import ConfigError
from defectmine.models.losses import fcdd_loss, pseudo_huber
from defectmine.models.trained import TrainedDetector
from defectmine.models.training import TrainingConfig


@dataclass
class FCDDConfig(TrainingConfig):
    """Hyperparameters of deeper FCDD (the fields of `training.TrainingConfig`).

    stride: output stride of the map (8: a 28x28 map for 224x224 input, the paper's choice).
    anomaly_share: in [0, 1); 0 trains one-class even when labelled anomalies are given.
    eval_every: validate every n epochs (when val has both classes) and keep the best-AUROC weights.
    """

    detector_name: ClassVar[str] = "fcdd"

    def __post_init__(self):
        super().__post_init__()
        if self.anomaly_share is None or not 0.0 <= self.anomaly_share < 1.0:
            raise ConfigError(f"fcdd: anomaly_share={self.anomaly_share} must be in [0, 1).")


class FCDDNetwork(nn.Module):
    """Backbone + 1x1 convolution to a one-channel map; forward returns the pseudo-Huber map (N, u, v)."""

    def __init__(self, backbone: nn.Module, channels: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Conv2d(channels, 1, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pseudo_huber(self.head(self.backbone(x))).squeeze(1)


class FCDD(TrainedDetector):
    """Deeper FCDD detector: ``FCDD(backbone="cnn", epochs=30).fit(normal, anomalous, val=val)``."""

    name = "fcdd"
    Config = FCDDConfig

    def _build_network(self, spec: ImageSpec) -> nn.Module:
        backbone = self._make_backbone(spec)
        return FCDDNetwork(backbone.module, backbone.out_channels)

    def _fit_one(self, normal: ImageDataset, anomalous: ImageDataset | None = None, *, val: ImageDataset | None = None,
                 on_validation=None):
        cfg = self.config
        self._start_fit(normal, anomalous, val)

        def loss_fn(model, batch):
            images, labels = batch
            return fcdd_loss(model(images), labels)

        self._fit_network(loss_fn, normal, anomalous, val, description=f"fcdd ({cfg.backbone})",
                          on_validation=on_validation)
        return self

    def _forward_scores(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean pseudo-Huber map is the image score; the map itself is the anomaly map."""
        heat = self.network_(batch)
        return heat.flatten(1).mean(dim=1), heat

