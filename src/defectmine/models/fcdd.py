"""Deeper FCDD (Yasuno et al., deeper-FCDD damage vision mining; Liznerski et al., FCDD).

A fully convolutional backbone maps an image to a 1-channel map A; H = pseudo-Huber(A) is the
anomaly map, its mean the image score (equation 4, up to the constant 1/uv). The loss (equation 3)
uses labelled anomalies when given and is one-class without them; with none, synthetic anomalies
stand in, as FCDD's authors do with confetti noise and outlier exposure.

`tile` (our extension) scores an image by its most anomalous window instead of the whole map: at an
input size near the native resolution a small defect covers a tiny share of the map, and its mean
would average it away. Every image then trains on its highest window, as it is scored (multiple-
instance learning: an anomalous label says a defect is somewhere, not everywhere; a normal one that no
window holds one). `tile_normals="map"` keeps the whole map's mean for normal images, measured as the
weaker form (BENCHMARKS.md, levers, tiles rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
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
    tile: side in input pixels of the window whose mean map is the image score, the highest over all
        windows (one map cell apart); None scores the mean of the whole map (the paper's). Images then
        train on their highest window. Meant for `image_size` near the native resolution, e.g. 256
        with tile 128.
    tile_normals: with a tile, what normal images train on: "window" (their highest window, as they
        are scored) or "map" (the whole map's mean, the paper's normal term).
    """

    detector_name: ClassVar[str] = "fcdd"

    tile: int | None = None
    tile_normals: str = "window"

    def __post_init__(self):
        super().__post_init__()
        if self.anomaly_share is None or not 0.0 <= self.anomaly_share < 1.0:
            raise ConfigError(f"fcdd: anomaly_share={self.anomaly_share} must be in [0, 1).")
        if self.tile is not None and (isinstance(self.tile, bool) or not isinstance(self.tile, int) or self.tile < 1):
            raise ConfigError(f"fcdd: tile={self.tile!r} must be a whole number of pixels >= 1, or unset.")
        if self.tile_normals not in ("window", "map"):
            raise ConfigError(f"fcdd: tile_normals={self.tile_normals!r}; use window or map.")


def tiled_scores(heat: torch.Tensor, image_shape: tuple[int, int], tile: int | None) -> torch.Tensor:
    """Image scores of maps `heat` (N, u, v) of images of `image_shape` (H, W): the mean of the map
    (`tile` None), else the highest mean over windows covering `tile` x `tile` input pixels (at least
    one map cell; the whole map where the tile is as large as the image)."""
    if tile is None:
        return heat.flatten(1).mean(dim=1)
    # int(): while an export traces the graph the sizes are tensors; the spec fixes them, so constants are right
    cells = [max(1, min(int(side), round(tile * int(side) / int(full))))
             for side, full in zip(heat.shape[-2:], image_shape)]
    return F.avg_pool2d(heat[:, None], kernel_size=cells, stride=1).flatten(1).amax(dim=1)


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
        if cfg.tile is not None and cfg.tile > min(normal.spec.size):
            raise ConfigError(f"fcdd: tile={cfg.tile} px is larger than the {normal.spec.size[0]}x{normal.spec.size[1]} "
                              "images; use a smaller tile or a larger --image-size.")
        self._start_fit(normal, anomalous, val)

        def loss_fn(model, batch):
            images, labels = batch
            heat = model(images)
            if cfg.tile is None:
                return fcdd_loss(heat, labels)
            windows = tiled_scores(heat, images.shape[-2:], cfg.tile)
            return fcdd_loss(heat, labels, anomalous_scores=windows,
                             normal_scores=windows if cfg.tile_normals == "window" else None)

        self._fit_network(loss_fn, normal, anomalous, val, description=f"fcdd ({cfg.backbone})",
                          on_validation=on_validation)
        return self

    def _forward_scores(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean pseudo-Huber map (or its highest tile mean) is the image score; the map itself is
        the anomaly map."""
        heat = self.network_(batch)
        return tiled_scores(heat, batch.shape[-2:], self.config.tile), heat

