"""PaDiM-style detector (Defard et al., PaDiM, ICPR 2021): one Gaussian per feature-map position.

The paper: "PaDiM: a Patch Distribution Modeling Framework for Anomaly Detection and Localization".

A frozen multi-scale encoder describes every position of an image by its stages' features (deeper
stages resized to the first one's grid, a random subset of `n_features` channels kept: PaDiM's random
dimension reduction). Fitting is one pass over the normal training images: the mean and covariance of
each position's feature (plus `ridge` on the diagonal). The anomaly map is each position's Mahalanobis
distance to its Gaussian, Gaussian-upsampled to the input size; the image score is the map's maximum.

Nothing is trained, so nothing needs labels, epochs or a GPU. The features need not be learned: a
randomly initialised encoder (the default: nothing downloaded) ranks ELPV's cells better than our
trained zero-label detectors do (BENCHMARKS.md, zero-label section), because the cells are aligned and
a per-position Gaussian learns where busbars and edges belong. A local weights file (our
self-supervised ``backbone.safetensors``, or ImageNet weights) can replace the random encoder.
Labelled anomalies are not used (a warning says so); fit `draem` or `fcdd` to learn from them.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from defectmine.backbones import build_encoder
from defectmine.data.dataset import ImageDataset
from defectmine.data.images import ImageSpec
from defectmine.errors import ConfigError
from defectmine.explain.upsample import gaussian_upsample
from defectmine.models.trained import TrainedDetector
from defectmine.pretrain import pretrain
from defectmine.progress import track


@dataclass
class PaDiMConfig:
    """Hyperparameters of the PaDiM-style detector.

    backbone: the frozen encoder: "cnn", "vit_tiny" or a timm name (resnet18, the default, as PaDiM).
    backbone_weights: None (random weights drawn from `seed`: nothing downloaded), "pretrained" (timm
        hub; needs network) or a local weights file, e.g. our self-supervised backbone.safetensors. A
        list of n files is an ensemble of n encoders, one per file (`ensemble` becomes n; member i also
        draws its channels with seed + i), e.g. the same pretraining run with n seeds: steadier than any
        one of them, whose features depend on the pretraining's draw (BENCHMARKS.md, zero labels).
    width: base channel count of the "cnn" / "vit_tiny" encoders (ignored for timm models).
    pretrain_epochs: 0 (the default): the encoder as `backbone_weights` gives it. n > 0: first pretrain it
        self-supervised for n epochs on the normal training images (`defectmine.pretrain`, the library's
        default method; labels unused), starting from `backbone_weights`, then fit the Gaussians on its
        features. Minutes on a CPU for the small "cnn"; a timm network takes far longer.
    layers: the encoder stages whose features are stacked (`build_encoder`'s out_indices); the first
        one's grid is the grid of Gaussians (resnet18's stage 1: stride 4).
    n_features: channels kept of the stacked features, a random subset drawn from `seed` (PaDiM: 100
        for resnet18); every channel when the stages have fewer.
    ridge: added to the diagonal of every covariance (PaDiM: 0.01), so it can be inverted.
    sigma: the Gaussian (in input pixels) that upsamples the distance map to the input size (PaDiM
        blurs with sigma 4 after a bilinear upsampling).
    tta: test-time augmentation when scoring: image scores and maps are the mean over the four flips.
    ensemble: members (1: one encoder). n > 1 fits n encoders with seeds seed .. seed + n - 1 (other
        random weights and channels; or one per `backbone_weights` file) and scores with the mean of
        their standardised scores.
    score_batch_size: images per batch when fitting and scoring.
    seed: seed of the random encoder weights and of the channel subset.
    device: auto (CUDA when present), cpu or cuda.
    quiet: no progress output.
    """

    detector_name: ClassVar[str] = "padim"

    backbone: str = "resnet18"
    backbone_weights: str | list[str] | None = None
    width: int = 16
    pretrain_epochs: int = 0
    layers: list[int] = field(default_factory=lambda: [1, 2, 3])
    n_features: int = 100
    ridge: float = 0.01
    sigma: float = 4.0
    tta: bool = False
    ensemble: int = 1
    score_batch_size: int = 64
    seed: int = 0
    device: str = "auto"
    quiet: bool = False

    def __post_init__(self):
        name = self.detector_name
        if not self.layers or any(not isinstance(i, int) or i < 0 for i in self.layers):
            raise ConfigError(f"{name}: layers={self.layers!r} must be a non-empty list of stage numbers, e.g. [1, 2, 3].")
        if list(self.layers) != sorted(set(self.layers)):
            raise ConfigError(f"{name}: layers={self.layers!r} must be distinct and increasing, e.g. [1, 2, 3].")
        if self.n_features < 1:
            raise ConfigError(f"{name}: n_features={self.n_features} must be >= 1 (PaDiM keeps 100).")
        if not self.ridge > 0:
            raise ConfigError(f"{name}: ridge={self.ridge} must be positive (PaDiM adds 0.01).")
        if not self.sigma > 0:
            raise ConfigError(f"{name}: sigma={self.sigma} must be a positive number of pixels.")
        if self.ensemble < 1 or self.score_batch_size < 1 or self.width < 1:
            raise ConfigError(f"{name}: ensemble, score_batch_size and width must be >= 1.")
        if self.pretrain_epochs < 0:
            raise ConfigError(f"{name}: pretrain_epochs={self.pretrain_epochs} must be >= 0 (0: no pretraining).")
        if isinstance(self.backbone_weights, list):
            self._one_member_per_weights_file()

    def _one_member_per_weights_file(self) -> None:
        files = self.backbone_weights
        if not files or not all(isinstance(f, str) and f for f in files):
            raise ConfigError(f"{self.detector_name}: backbone_weights={files!r} must be a weights file or a non-empty "
                              'list of them. Fix: e.g. -p \'backbone_weights=["a.safetensors", "b.safetensors"]\'.')
        if self.ensemble not in (1, len(files)):
            raise ConfigError(f"{self.detector_name}: {len(files)} backbone_weights files make an ensemble of "
                              f"{len(files)}, but ensemble={self.ensemble}. Fix: leave ensemble unset.")
        if len(files) == 1:
            self.backbone_weights = files[0]
        else:
            self.ensemble = len(files)


class PositionGaussians(nn.Module):
    """A frozen encoder and one Gaussian per position of its first stage's grid.

    Buffers (saved with the weights): `channels` (the kept feature channels), `mean` (P, D) and
    `precision` (P, D, D), the inverse covariances; P positions, D kept channels.
    """

    def __init__(self, encoder: nn.Module, spec: ImageSpec, n_features: int, seed: int):
        super().__init__()
        self.encoder = encoder.eval().requires_grad_(False)
        with torch.no_grad():
            probe = self._stacked(torch.zeros(1, spec.channels, *spec.size))
        total, *self.grid = probe.shape[1:]
        kept = min(n_features, total)
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("channels", torch.randperm(total, generator=generator)[:kept].sort().values)
        positions = self.grid[0] * self.grid[1]
        self.register_buffer("mean", torch.zeros(positions, kept))
        self.register_buffer("precision", torch.eye(kept).repeat(positions, 1, 1))

    def train(self, mode: bool = True):
        # the encoder stays in eval mode: its batch norms read their (initial or loaded) statistics
        super().train(mode)
        self.encoder.eval()
        return self

    def _stacked(self, images: torch.Tensor) -> torch.Tensor:
        maps = self.encoder(images)
        size = maps[0].shape[-2:]
        return torch.cat([maps[0]] + [F.interpolate(m, size=size, mode="nearest") for m in maps[1:]], dim=1)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, P, D) kept features of a normalised batch, one row per position."""
        kept = self._stacked(images)[:, self.channels]
        return kept.flatten(2).transpose(1, 2).float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, u, v) Mahalanobis distance of every position's feature to its Gaussian."""
        # (P, B, D), contiguous: one matrix product per position (bmm on the strided view is ~100x slower)
        centred = (self.features(images) - self.mean).transpose(0, 1).contiguous()
        squared = (torch.bmm(centred, self.precision) * centred).sum(dim=2).transpose(0, 1)
        return squared.clamp_min(0).sqrt().reshape(-1, *self.grid)


class PaDiM(TrainedDetector):
    """``PaDiM().fit(normal)``: per-position Gaussians of frozen features; maps are Mahalanobis distances."""

    name = "padim"
    Config = PaDiMConfig

    def _build_network(self, spec: ImageSpec, weights: str | Path | None = None) -> nn.Module:
        """The encoder (with `weights`, else `backbone_weights`, else random from the seed) and empty Gaussians;
        with a list of weights files, the first member's (an ensemble's members build their own)."""
        cfg = self.config
        weights = weights or cfg.backbone_weights
        if isinstance(weights, list):
            weights = weights[0]
        with torch.random.fork_rng(devices=[]):  # the random encoder depends on the seed only
            torch.manual_seed(cfg.seed)
            encoder = build_encoder(cfg.backbone, spec.channels, out_indices=cfg.layers, width=cfg.width,
                                    weights=weights)
        return PositionGaussians(encoder, spec, cfg.n_features, cfg.seed)

    def _member_options(self, index: int) -> dict:
        options = super()._member_options(index)
        if isinstance(self.config.backbone_weights, list):  # an ensemble over weights files: one each
            options["backbone_weights"] = self.config.backbone_weights[index]
        return options

    def _fit_one(self, normal: ImageDataset, anomalous: ImageDataset | None = None, *, val: ImageDataset | None = None,
                 on_validation=None):
        cfg = self.config
        network = self._start_fit(normal, anomalous, val)
        if anomalous is not None and len(anomalous):  # said before a pretraining that may take minutes
            warnings.warn(f"padim learns from normal images only: the {len(anomalous)} labelled anomalies are not "
                          "used (fit draem or fcdd to learn from them).", stacklevel=3)
        if cfg.pretrain_epochs:
            with tempfile.TemporaryDirectory(prefix="padim-pretrain-") as folder:
                result = pretrain(normal, out_dir=folder, backbone=cfg.backbone, width=cfg.width,
                                  epochs=cfg.pretrain_epochs, seed=cfg.seed, device=cfg.device,
                                  init_weights=cfg.backbone_weights, source="padim's normal training images",
                                  quiet=cfg.quiet)
                network = self._build_network(normal.spec, result.weights)
            self.network_ = network = network.to(self.device, memory_format=torch.channels_last)
        # float64 sums: the covariance is E[xx^T] - mean mean^T, which loses digits in float32
        total = sum_outer = None
        count = 0
        pixels = normal.raw_images()
        batches = self._normalised_batches(pixels)
        with torch.no_grad():
            for batch in track(batches, f"padim ({cfg.backbone} features)", total=-(-len(pixels) // cfg.score_batch_size),
                               quiet=cfg.quiet):
                features = network.features(batch.contiguous(memory_format=torch.channels_last)).double()
                per_position = features.transpose(0, 1).contiguous()  # (P, B, D)
                batch_sum, batch_outer = features.sum(0), torch.bmm(per_position.transpose(1, 2), per_position)
                total = batch_sum if total is None else total + batch_sum
                sum_outer = batch_outer if sum_outer is None else sum_outer + batch_outer
                count += len(features)
            mean = total / count
            covariance = (sum_outer - count * mean[:, :, None] * mean[:, None, :]) / (count - 1)
            covariance += cfg.ridge * torch.eye(mean.shape[1], dtype=covariance.dtype, device=covariance.device)
            network.mean.copy_(mean.float())
            network.precision.copy_(torch.linalg.inv(covariance).float())
        self.history_, self.best_epoch_, self.stopped_epoch_, self.synthetic_ = [], None, None, None
        network.eval()
        return self

    def _forward_scores(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = gaussian_upsample(self.network_(batch), tuple(batch.shape[-2:]), sigma=self.config.sigma)
        return maps.flatten(1).amax(dim=1), maps
