"""Deeper FCDD (Yasuno et al., deeper-FCDD damage vision mining; Liznerski et al., FCDD).

A fully convolutional backbone maps an image to a 1-channel map A; H = pseudo-Huber(A) is the
anomaly map, its mean the image score (equation 4, up to the constant 1/uv). The loss (equation 3)
uses labelled anomalies when given and is one-class without them; with none, synthetic anomalies
stand in, as FCDD's authors do with confetti noise and outlier exposure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from defectmine.backbones import build_backbone
from defectmine.data.dataset import ImageDataset
from defectmine.data.images import ImageSpec, normalise
from defectmine.errors import ConfigError, DataError
from defectmine.explain.upsample import gaussian_upsample
from defectmine.models.base import Detector, Scores, seed_everything
from defectmine.models.losses import fcdd_loss, pseudo_huber
from defectmine.models.synthetic import random_flips, resolve_synthetic, synthesize
from defectmine.models.training import BestState, mixed_batches, n_batches, train_epochs


@dataclass
class FCDDConfig:
    """Hyperparameters of deeper FCDD.

    backbone: "cnn" (small from-scratch CNN) or a timm name (vgg16, resnet18, inception_v3, ...).
    backbone_weights: None, "pretrained" (timm hub, needs network) or a local weights file.
    stride: output stride of the map (8: a 28x28 map for 224x224 input, the paper's choice).
    synthetic: synthetic anomalies - "auto" (on only without labelled anomalies), "none",
        "confetti", "cutpaste" or "mixed".
    anomaly_share: share of each batch that is anomalous (labelled and/or synthetic).
    eval_every: validate every n epochs (when val has both classes) and keep the best-AUROC weights.
    """

    backbone: str = "cnn"
    backbone_weights: str | None = None
    width: int = 16
    stride: int = 8
    freeze_backbone: bool = False
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-5
    synthetic: str = "auto"
    anomaly_share: float = 0.25
    augment: bool = True
    eval_every: int = 5
    score_batch_size: int = 64
    seed: int = 0
    device: str = "auto"
    quiet: bool = False

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 2:
            raise ConfigError("fcdd: epochs must be >= 1 and batch_size >= 2.")
        if not 0.0 <= self.anomaly_share < 1.0:
            raise ConfigError(f"fcdd: anomaly_share={self.anomaly_share} must be in [0, 1).")
        if self.lr <= 0:
            raise ConfigError(f"fcdd: lr={self.lr} must be positive.")
        resolve_synthetic(self.synthetic, 0)  # validates the name


class FCDDNetwork(nn.Module):
    """Backbone + 1x1 convolution to a one-channel map; forward returns the pseudo-Huber map (N, u, v)."""

    def __init__(self, backbone: nn.Module, channels: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Conv2d(channels, 1, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pseudo_huber(self.head(self.backbone(x))).squeeze(1)


class FCDD(Detector):
    """Deeper FCDD detector: ``FCDD(backbone="cnn", epochs=30).fit(normal, anomalous, val=val)``."""

    name = "fcdd"
    Config = FCDDConfig

    def _build_network(self, spec: ImageSpec) -> nn.Module:
        cfg = self.config
        backbone = build_backbone(
            cfg.backbone, spec.channels, stride=cfg.stride, width=cfg.width, weights=cfg.backbone_weights
        )
        if cfg.freeze_backbone:
            backbone.module.requires_grad_(False)
        return FCDDNetwork(backbone.module, backbone.out_channels)

    def fit(self, normal: ImageDataset, anomalous: ImageDataset | None = None, *, val: ImageDataset | None = None):
        cfg = self.config
        _check_training_sets(normal, anomalous, val)
        seed_everything(cfg.seed)
        device = self.device
        self.spec_ = normal.spec
        # channels_last: about 2x faster convolutions on CPU (oneDNN) for these small networks
        network = self._build_network(normal.spec).to(device, memory_format=torch.channels_last)
        self.network_ = network

        normal_px = normal.raw_images().to(device)
        anomalous_px = anomalous.raw_images().to(device) if anomalous is not None and len(anomalous) else None
        n_anomalous = 0 if anomalous_px is None else len(anomalous_px)
        synthetic = resolve_synthetic(cfg.synthetic, n_anomalous)
        generator = torch.Generator().manual_seed(cfg.seed)

        def batches():
            for batch in mixed_batches(
                len(normal_px), n_anomalous, batch_size=cfg.batch_size, anomaly_share=cfg.anomaly_share,
                synthetic=synthetic != "none", generator=generator,
            ):
                parts = [normal_px[batch.normal.to(device)]]
                if len(batch.anomalous):
                    parts.append(anomalous_px[batch.anomalous.to(device)])
                if batch.n_synthetic:
                    source = torch.randint(0, len(normal_px), (batch.n_synthetic,), generator=generator)
                    parts.append(synthesize(normal_px[source.to(device)], synthetic, generator))
                pixels = torch.cat(parts)
                labels = torch.zeros(len(pixels), device=device)
                labels[len(parts[0]):] = 1.0
                if cfg.augment:
                    pixels = random_flips(pixels, generator)
                yield normalise(pixels, self.spec_).contiguous(memory_format=torch.channels_last), labels

        def loss_fn(model, batch):
            images, labels = batch
            return fcdd_loss(model(images), labels)

        params = [p for p in network.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
        best = BestState()
        validate = val is not None and len(set(val.labels.tolist())) == 2

        def on_epoch_end(epoch: int, loss: float) -> str | None:
            last = epoch + 1 == cfg.epochs
            if not validate or not ((epoch + 1) % cfg.eval_every == 0 or last):
                return None
            auroc = _auroc(val.labels, self.score(val, maps=False).image)
            best.update(network, auroc, epoch)
            return f"val AUROC {auroc:.3f} (best {best.value:.3f})"

        self.history_ = train_epochs(
            network, loss_fn, batches, optimizer, cfg.epochs, scheduler=scheduler,
            steps_per_epoch=n_batches(len(normal_px), cfg.batch_size, cfg.anomaly_share if (n_anomalous or synthetic != "none") else 0.0),
            on_epoch_end=on_epoch_end, description=f"fcdd ({cfg.backbone})", quiet=cfg.quiet,
        )
        best.restore(network)
        self.best_epoch_ = best.epoch
        self.synthetic_ = synthetic
        network.eval()
        return self

    @torch.inference_mode()
    def score(self, images: ImageDataset | torch.Tensor, *, maps: bool = True) -> Scores:
        """Image scores (mean pseudo-Huber map) and, unless maps=False, Gaussian-upsampled maps."""
        pixels = self._as_uint8_batch(images)
        network = self.network_
        was_training = network.training
        network.eval()
        device = self.device
        image_scores, all_maps = [], []
        for start in range(0, len(pixels), self.config.score_batch_size):
            batch = normalise(pixels[start:start + self.config.score_batch_size].to(device), self.spec_)
            batch = batch.contiguous(memory_format=torch.channels_last)
            heat = network(batch)
            image_scores.append(heat.flatten(1).mean(dim=1).cpu())
            if maps:
                all_maps.append(gaussian_upsample(heat, tuple(self.spec_.size)).cpu())
        network.train(was_training)
        image = torch.cat(image_scores).numpy() if image_scores else np.zeros(0)
        full = torch.cat(all_maps).numpy().astype(np.float32) if maps and all_maps else None
        return Scores(image=image, maps=full)


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def _check_training_sets(normal: ImageDataset, anomalous: ImageDataset | None, val: ImageDataset | None) -> None:
    if normal is None or len(normal) == 0:
        raise DataError("fit: no normal training images; the detector learns what normal looks like from them.")
    if len(normal) < 2:
        raise DataError("fit: at least 2 normal training images are needed.")
    if normal.labels.any():
        raise DataError("fit: the `normal` set contains anomalous records; pass those as `anomalous`.")
    for name, other in (("anomalous", anomalous), ("val", val)):
        if other is not None and other.spec != normal.spec:
            raise DataError(f"fit: the {name} set was prepared with {other.spec}, the normal set with {normal.spec}.")
    if anomalous is not None and len(anomalous) and not anomalous.labels.all():
        raise DataError("fit: the `anomalous` set contains normal records.")
