"""VAE + Grad-CAM with a log-barrier size constraint (García-de-la-Puente et al., "Unsupervised
Defect Detection for Infrastructure Inspection", 2023; after Silva-Rodríguez et al., "Constrained
unsupervised anomaly segmentation", 2022).

A convolutional VAE learns defect-free images only (equation 3: reconstruction + β·KL). The attention
map is the Grad-CAM of the latent mean z_μ at the last encoder block, with its gradient weights
(equation 4: a = sigmoid(sum_k alpha_k A_k), alpha_k the spatial mean of d(sum z_μ)/dA_k; the public
reference code drops the alpha_k, we keep them). During training the log-barrier extension psi_t
(equation 5) of the coverage constraint f_c(a) = 1 - mean(a) <= 0 pushes the attention of normal
images to cover the whole image (equation 6, weight λ); at inference defects draw the attention.

Image score: the reconstruction error (mean squared error of the image). Anomaly map: the attention
(`anomaly_map="attention"`, the paper's) or the per-pixel squared residual, lightly smoothed
(`"residual"`, full resolution: thin cracks stay thin). By default labelled anomalies are not used for
training (the paper's method is unsupervised); they and the validation set only serve model selection
and thresholds, which `evaluation/` chooses on val: the paper's mean + k·std of validation-normal errors
is the `mean_std` rule. `anomaly_weight > 0` (our extension, not the paper's) also trains on the
labelled anomalies, with a bounded hinge that pushes their reconstruction error up to `anomaly_margin`
times the batch's normal error: the VAE learns not to reconstruct what a known defect looks like.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from defectmine.data.dataset import ImageDataset
from defectmine.data.images import ImageSpec
from defectmine.errors import ConfigError
from defectmine.explain.gradcam import gradient_weighted_sum
from defectmine.models.trained import TrainedDetector
from defectmine.models.training import TrainingConfig

ANOMALY_MAPS = ("attention", "residual")


def log_barrier(z: torch.Tensor, t: float) -> torch.Tensor:
    """The log-barrier extension psi_t(z) of the constraint z <= 0 (equation 5, Kervadec et al. 2019).

    -log(-z) / t where z <= -1/t² (inside the barrier); the linear continuation
    t·z - log(1/t²) / t + 1/t elsewhere, which is finite for infeasible z and meets the log branch
    with the same value and slope at z = -1/t². Elementwise.
    """
    if not t > 0:
        raise ConfigError(f"log_barrier: t={t} must be positive.")
    inside = z <= -1.0 / t**2
    log_branch = -torch.log(-z.clamp(max=-1.0 / t**2)) / t
    linear = t * z - math.log(1.0 / t**2) / t + 1.0 / t
    return torch.where(inside, log_branch, linear)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) per image, summed over latent dimensions (equation 2 with
    its sign as it should be: -1/2 sum(1 + log sigma² - mu² - sigma²) >= 0)."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)


@dataclass
class VAEGradCAMConfig(TrainingConfig):
    """Hyperparameters of the VAE + Grad-CAM detector (the fields of `training.TrainingConfig`, and):

    blocks: convolutional blocks of the encoder (stride 2 each) and of the mirrored decoder (5, the paper's).
    latent: dimension of the latent code (32, the paper's).
    width: channels of the first block, doubled per block up to 8·width.
    beta: weight of the KL term (summed over latent dimensions) against the per-pixel mean squared
        reconstruction error.
    barrier_weight: λ of equation 6, the weight of the log-barrier coverage term (0: a plain VAE).
    barrier_t: t of the log barrier (20, the paper's).
    anomaly_map: "attention" (Grad-CAM of z_μ, the paper's map) or "residual" (squared reconstruction
        error per pixel, at full resolution).
    residual_sigma: Gaussian smoothing (pixels) of the residual map; 0 leaves it raw.
    anomaly_weight: weight of the labelled-anomaly hinge (0: unsupervised, the paper's; labelled
        anomalies are then left out of training).
    anomaly_margin: the hinge's target, a multiple (> 1) of the batch's mean normal reconstruction error.
    anomaly_share: share of each batch given to labelled anomalies when anomaly_weight > 0 (0.25 when unset).
    The backbone options do not apply (the VAE builds its own encoder); backbone must stay "cnn".
    synthetic is fixed at "none": a VAE taught to fail on cut-paste patches would fail on any novelty.
    """

    detector_name: ClassVar[str] = "vae_gradcam"
    ignored_levers: ClassVar[tuple[str, ...]] = ("depth", "norm", "bn_momentum")  # its VAE is built here

    blocks: int = 5
    latent: int = 32
    width: int = 16
    beta: float = 1e-3
    barrier_weight: float = 0.01
    barrier_t: float = 20.0
    anomaly_map: str = "attention"
    residual_sigma: float = 2.0
    anomaly_weight: float = 0.0
    anomaly_margin: float = 2.0
    synthetic: str = "none"
    anomaly_share: float | None = None

    def __post_init__(self):
        super().__post_init__()
        name = self.detector_name
        if self.backbone != "cnn" or self.backbone_weights is not None or self.freeze_backbone:
            raise ConfigError(f"{name}: builds its own VAE encoder; leave backbone, backbone_weights and "
                              "freeze_backbone unset.")
        if self.blocks < 1 or self.latent < 1 or self.width < 1:
            raise ConfigError(f"{name}: blocks, latent and width must be >= 1.")
        if self.beta < 0 or self.barrier_weight < 0 or self.barrier_t <= 0 or self.residual_sigma < 0:
            raise ConfigError(f"{name}: beta, barrier_weight and residual_sigma must be >= 0 and barrier_t > 0.")
        if self.anomaly_map not in ANOMALY_MAPS:
            raise ConfigError(f"{name}: anomaly_map={self.anomaly_map!r}; use one of {', '.join(ANOMALY_MAPS)}.")
        if self.synthetic != "none":
            raise ConfigError(f"{name}: trains on normal images (and labelled ones with anomaly_weight > 0), "
                              "never on synthetic defects; leave synthetic unset.")
        if self.anomaly_weight < 0 or self.anomaly_margin <= 1:
            raise ConfigError(f"{name}: anomaly_weight={self.anomaly_weight} must be >= 0 and "
                              f"anomaly_margin={self.anomaly_margin} > 1.")
        if self.anomaly_share and not self.anomaly_weight:  # 0 is what configs saved before the option hold
            raise ConfigError(f"{name}: anomaly_share={self.anomaly_share} needs anomaly_weight > 0 (without it "
                              "labelled anomalies are not trained on).")
        if self.anomaly_weight and self.anomaly_share is not None and not 0 < self.anomaly_share < 1:
            raise ConfigError(f"{name}: anomaly_share={self.anomaly_share} must be in (0, 1).")

    @property
    def batch_anomaly_share(self) -> float:
        """The share of each batch that labelled anomalies take (0 when they are not trained on)."""
        if not self.anomaly_weight:
            return 0.0
        return 0.25 if self.anomaly_share is None else self.anomaly_share


class VAEOutput(NamedTuple):
    """reconstruction (N, C, H, W), mu and logvar (N, latent), features of the last encoder block."""

    reconstruction: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor
    features: torch.Tensor


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, inplace=True))


class ConvVAE(nn.Module):
    """Encoder of `blocks` stride-2 convolution blocks -> (mu, logvar); decoder of as many
    upsample + convolution blocks back to the input size. Sampling z = mu + sigma·eps (equation 1)
    happens in training mode only; in eval mode z = mu, so scores repeat."""

    def __init__(self, spec: ImageSpec, blocks: int, latent: int, width: int):
        super().__init__()
        widths = [min(width * 2**i, width * 8) for i in range(blocks)]
        channels = [spec.channels, *widths]
        self.encoder = nn.Sequential(*[_block(channels[i], channels[i + 1], 2) for i in range(blocks)])
        self.size = tuple(spec.size)
        self.grid = tuple(math.ceil(s / 2**blocks) for s in spec.size)
        flat = widths[-1] * self.grid[0] * self.grid[1]
        self.to_mu, self.to_logvar = nn.Linear(flat, latent), nn.Linear(flat, latent)
        self.from_latent = nn.Linear(latent, flat)
        back = widths[::-1]
        self.decoder = nn.Sequential(*[
            nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), _block(back[i], back[min(i + 1, blocks - 1)], 1))
            for i in range(blocks)
        ])
        self.out = nn.Conv2d(back[-1], spec.channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> VAEOutput:
        features = self.encoder(x)
        flat = features.flatten(1)
        mu, logvar = self.to_mu(flat), self.to_logvar(flat).clamp(-10, 10)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        h = self.from_latent(z).view(x.shape[0], -1, *self.grid)
        reconstruction = self.out(self.decoder(h))
        if reconstruction.shape[-2:] != x.shape[-2:]:
            reconstruction = F.interpolate(reconstruction, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return VAEOutput(reconstruction, mu, logvar, features)


def attention(output: VAEOutput, *, create_graph: bool) -> torch.Tensor:
    """Equation 4: sigmoid(sum_k alpha_k A_k) at the last encoder block (N, h, w), alpha_k the spatial
    mean of d(sum_i z_mu,i)/dA_k. `create_graph=True` keeps it differentiable for the barrier loss."""
    (grads,) = torch.autograd.grad(output.mu.sum(), output.features, create_graph=create_graph)
    return torch.sigmoid(gradient_weighted_sum(output.features, grads))


def vae_gradcam_loss(output: VAEOutput, images: torch.Tensor, *, beta: float, barrier_weight: float,
                     t: float, labels: torch.Tensor | None = None, anomaly_weight: float = 0.0,
                     anomaly_margin: float = 2.0) -> torch.Tensor:
    """Equation 6 averaged over the normal images of the batch (all of them when `labels` is None):
    reconstruction (per-pixel mean squared error) + β·KL + λ·psi_t(1 - mean(a)); the attention term is
    left out (not computed) when λ = 0.

    Labelled anomalies (labels 1) add anomaly_weight · mean(relu(anomaly_margin · r̄ - r_a)), r_a their
    reconstruction errors and r̄ the batch's mean normal error, held fixed. The hinge is bounded: once an
    anomaly's error reaches the margin it pulls no more, so it cannot run away the way an unbounded
    "maximise the anomaly's error" term would (and it needs normal images in the batch to measure r̄).
    """
    reconstruction = (output.reconstruction - images).pow(2).flatten(1).mean(dim=1)
    loss = reconstruction + beta * kl_divergence(output.mu, output.logvar)
    if barrier_weight:
        coverage = 1.0 - attention(output, create_graph=True).flatten(1).mean(dim=1)
        loss = loss + barrier_weight * log_barrier(coverage, t)
    if labels is None:
        return loss.mean()
    anomalous = labels > 0.5
    normal = ~anomalous
    total = loss[normal].mean() if normal.any() else loss.sum() * 0.0
    if anomaly_weight and anomalous.any() and normal.any():
        target = anomaly_margin * reconstruction[normal].mean().detach()
        total = total + anomaly_weight * F.relu(target - reconstruction[anomalous]).mean()
    return total


def _gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of (N, H, W) maps (reflect padding); sigma 0 returns them as they are."""
    if sigma <= 0:
        return maps
    radius = max(1, int(round(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    out = F.pad(maps[:, None], (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1))
    return F.conv2d(out, kernel.view(1, 1, -1, 1))[:, 0]


class VAEGradCAM(TrainedDetector):
    """``VAEGradCAM(epochs=30).fit(normal, val=val)``: reconstruction-error scores, attention maps."""

    name = "vae_gradcam"
    Config = VAEGradCAMConfig

    def _build_network(self, spec: ImageSpec) -> nn.Module:
        cfg = self.config
        return ConvVAE(spec, cfg.blocks, cfg.latent, cfg.width)

    def _fit_one(self, normal: ImageDataset, anomalous: ImageDataset | None = None, *, val: ImageDataset | None = None,
                 on_validation=None):
        cfg = self.config
        self._start_fit(normal, anomalous, val)

        def loss_fn(model, batch):
            images, labels = batch
            return vae_gradcam_loss(model(images), images, beta=cfg.beta, barrier_weight=cfg.barrier_weight,
                                    t=cfg.barrier_t, labels=labels, anomaly_weight=cfg.anomaly_weight,
                                    anomaly_margin=cfg.anomaly_margin)

        # Without anomaly_weight labelled anomalies are left out of training (the paper's unsupervised method).
        share = cfg.batch_anomaly_share
        self._fit_network(loss_fn, normal, anomalous if share else None, val,
                          description=f"vae_gradcam (latent {cfg.latent})", on_validation=on_validation,
                          anomaly_share=share)
        return self

    def _image_scores(self, batch: torch.Tensor) -> torch.Tensor:
        """The reconstruction error (mean squared error per image)."""
        output = self.network_(batch)
        return (output.reconstruction - batch).pow(2).flatten(1).mean(dim=1)

    @property
    def maps_need_gradients(self) -> bool:
        """True for attention maps (Grad-CAM of z_mu): an exported graph cannot compute them."""
        return self.config.anomaly_map == "attention"

    def _forward_scores(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        if cfg.anomaly_map == "residual":
            output = self.network_(batch)
            squared = (output.reconstruction - batch).pow(2)
            return squared.flatten(1).mean(dim=1), _gaussian_blur(squared.mean(dim=1), cfg.residual_sigma)
        # Grad-CAM needs gradients, also while `score` runs under inference mode.
        with torch.inference_mode(False), torch.enable_grad():
            x = batch.clone()
            output = self.network_(x)
            maps = attention(output, create_graph=False)
            image = (output.reconstruction - x).pow(2).flatten(1).mean(dim=1)
        maps = F.interpolate(maps[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        return image.detach(), maps.detach()
