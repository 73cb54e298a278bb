"""DRAEM-style detector (Zavrtanik et al., "DRAEM - a discriminatively trained reconstruction embedding
for surface anomaly detection", ICCV 2021), trained from scratch on synthetic defects made from the
training images themselves (`defectmine.data.perlin.synthetic_defects`: Perlin masks filled with
foreign textures of the batch, cut-paste and Poisson-blended patches; no external texture set).

Two networks: the reconstructive one (an autoencoder without skips) maps a defective image back to
its clean version (loss: L2 + 1 - SSIM against the clean image); the discriminative one (a U-Net with
skips) sees the image and its reconstruction side by side and outputs a full-resolution defect map
(focal loss against the synthetic mask). The anomaly map is that map's defect probability at input
resolution, read against the training normals' maps pixel by pixel (`standardise`: a z-score); the
image score is the maximum of that map after a mean filter (`score_pool` pixels).

With labelled defects (K > 0) they join every batch: with a mask the discriminative loss uses it;
without one an image-level term asks the map's strongest pixels to say "defect". The reconstructive
loss skips them (their clean version is unknown).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from defectmine.data.dataset import ImageDataset
from defectmine.data.images import ImageSpec, normalise
from defectmine.data.perlin import DEFAULT_DEFECTS, DEFECT_KINDS, check_source_ops, synthetic_defects
from defectmine.errors import ConfigError
from defectmine.evaluation.selection import validation_value
from defectmine.models.augment import augment_images, augment_parts
from defectmine.models.trained import TrainedDetector
from defectmine.models.training import (
    TrainingConfig, anomalous_slots, has_both_classes, mixed_batches, n_batches, train_and_select,
)
from defectmine.segment.losses import focal


STANDARDISE_CHOICES = ("both", "score", "none")
STANDARDISE_EPS = 1e-3  # added to the normals' per-pixel std: pixels where the map never moves stay finite


@dataclass
class DRAEMConfig(TrainingConfig):
    """Hyperparameters of the DRAEM-style detector (the fields of `training.TrainingConfig`, and):

    width: channels of the first level of both networks (doubled per level); DRAEM's is 128, far too
        heavy for a CPU; 16 fits one 128 px fit into minutes.
    depth: down-sampling levels of both networks (image sides should be multiples of 2**depth).
    defects: synthetic defect kinds, a subset of ("perlin", "cutpaste", "poisson", "band"); unset: the
        first three (as benchmarked; "band", large regions of another finish, is a measured option).
    clean_share: share of the normal training images left clean in each batch (DRAEM: 0.5).
    source_ops: photometric changes given to each "perlin" texture source (gamma, brightness, invert, ...;
        3, DRAEM's, the default: adopted on val, BENCHMARKS.md); 0 fills the region with another
        training image as it is (the default before).
    source_turns: whether texture sources may be turned (quarter turns, the "rotate" change) as well as
        flipped (DRAEM's foreign textures differ anyway); off, an oriented surface's marks keep their
        direction in the synthetic defects (a measured option, BENCHMARKS.md).
    anomaly_share: share of each batch given to labelled defects when there are any.
    score_pool: side of the mean filter applied before the maximum that is the image score (odd).
    standardise: "both" (the default), "score" or "none": read the defect map pixel by pixel as
        (map - mean) / (std + 1e-3) of the training normals' maps (the selected network's, computed when
        the fit ends) for the image score and the returned map alike, for the image score only, or not at
        all. Where normal images light the map up at the same place (tile edges, grinding marks, busbars),
        a defect there must stand out more. Adopted on val (BENCHMARKS.md): over three Magnetic Tile seeds
        the standardised image score and map both ranked better on val for every seed. The standardised
        map is a z-score, not a probability (pixel thresholds are chosen on val either way). A scoring
        option: `config.standardise` can be changed on a fitted model (a run's thresholds were chosen on
        the scores it fitted with). With `tta` each flipped image's map is read against the statistics
        of the normals' maps under all four flips (the kept ones averaged over the flips), which fit
        whichever flip is scored as long as the normal variation is about as strong at a place and at its
        mirror images (tile edges are).
    focal_gamma: gamma of the focal loss of the defect map.
    The backbone options and `synthetic` do not apply (both networks are built here; the synthetic
    defects are `defects`).
    """

    detector_name: ClassVar[str] = "draem"
    # its `depth` is its own (levels of both networks); norm and bn_momentum do not reach them
    ignored_levers: ClassVar[tuple[str, ...]] = ("norm", "bn_momentum")

    width: int = 16
    depth: int = 4
    defects: list[str] | None = None
    clean_share: float = 0.5
    source_ops: int = 3
    source_turns: bool = True
    score_pool: int = 11
    focal_gamma: float = 2.0
    standardise: str = "both"
    synthetic: str = "none"
    eval_every: int = 5

    def __post_init__(self):
        name = self.detector_name
        # before TrainingConfig's checks, which read depth as the convs per stage of a "cnn" backbone
        if self.backbone != "cnn" or self.backbone_weights is not None or self.freeze_backbone:
            raise ConfigError(f"{name}: builds its own networks; leave backbone, backbone_weights and freeze_backbone unset.")
        if self.width < 1 or self.depth < 1:
            raise ConfigError(f"{name}: width and depth must be >= 1.")
        super().__post_init__()
        if self.synthetic != "none":
            raise ConfigError(f"{name}: choose its synthetic defects with `defects` (of {', '.join(DEFECT_KINDS)}), "
                              "not `synthetic`.")
        kinds = list(DEFAULT_DEFECTS) if self.defects is None else list(self.defects)
        if not kinds or any(k not in DEFECT_KINDS for k in kinds):
            raise ConfigError(f"{name}: defects={self.defects!r}; use a list of {', '.join(DEFECT_KINDS)}.")
        if not 0 <= self.clean_share < 1:
            raise ConfigError(f"{name}: clean_share={self.clean_share} must be in [0, 1).")
        try:
            check_source_ops(self.source_ops)
        except ConfigError as error:
            raise ConfigError(f"{name}: {error}") from None
        if self.anomaly_share is None or not 0 < self.anomaly_share < 1:
            raise ConfigError(f"{name}: anomaly_share={self.anomaly_share} must be in (0, 1).")
        if not isinstance(self.source_turns, bool):
            raise ConfigError(f"{name}: source_turns={self.source_turns!r} must be true or false.")
        if self.standardise not in STANDARDISE_CHOICES:
            raise ConfigError(f"{name}: standardise={self.standardise!r}; use one of {', '.join(STANDARDISE_CHOICES)}.")
        if self.score_pool < 1 or self.score_pool % 2 == 0:
            raise ConfigError(f"{name}: score_pool={self.score_pool} must be an odd number of pixels >= 1.")


def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


class EncoderDecoder(nn.Module):
    """Full-resolution encoder-decoder: `depth` max-pool levels down, as many up. With `skips` it is a
    U-Net (DRAEM's discriminative network); without, an autoencoder (its reconstructive network)."""

    def __init__(self, c_in: int, c_out: int, width: int, depth: int, skips: bool):
        super().__init__()
        widths = [width * 2 ** min(i, 3) for i in range(depth + 1)]
        self.skips = skips
        self.down = nn.ModuleList([_double_conv(c_in, widths[0])] +
                                  [_double_conv(widths[i], widths[i + 1]) for i in range(depth)])
        self.up = nn.ModuleList([
            _double_conv(widths[i + 1] + (widths[i] if skips else 0), widths[i]) for i in reversed(range(depth))
        ])
        self.head = nn.Conv2d(widths[0], c_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = [self.down[0](x)]
        for block in self.down[1:]:
            levels.append(block(F.max_pool2d(levels[-1], 2)))
        h = levels[-1]
        for block, skip in zip(self.up, reversed(levels[:-1])):
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = block(torch.cat([h, skip], dim=1) if self.skips else h)
        return self.head(h)


class DRAEMNetwork(nn.Module):
    """forward(x) -> (reconstruction (N, C, H, W), defect logits (N, 1, H, W)).

    One channel: `segment.losses.focal` is a per-class sigmoid over class-index targets (0 background,
    1 defect), so channel 0 is the defect logit; a background channel would learn nothing of its own.
    With `size` (H, W) it also holds the per-pixel mean and std of the training normals' defect maps
    (buffers, saved with the weights; `normal_count` 0 until `DRAEM` fills them when a fit ends; models
    saved before they existed load without them, and read their map as it is)."""

    optional_buffers = ("normal_mean", "normal_std", "normal_count")

    def __init__(self, channels: int, width: int, depth: int, size: tuple[int, int] | None = None):
        super().__init__()
        self.reconstructive = EncoderDecoder(channels, channels, width, depth, skips=False)
        self.discriminative = EncoderDecoder(2 * channels, 1, width, depth, skips=True)
        if size is not None:
            self.register_buffer("normal_mean", torch.zeros(size))
            self.register_buffer("normal_std", torch.ones(size))
            self.register_buffer("normal_count", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        reconstruction = self.reconstructive(x)
        return reconstruction, self.discriminative(torch.cat([x, reconstruction], dim=1))


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 7, data_range: float = 1.0) -> torch.Tensor:
    """Mean structural similarity (Wang et al. 2004) of two batches with a uniform `window` (as
    skimage's default), per image (N,). Inputs on the same scale; `data_range` their value range."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    pad = window // 2

    def mean(t: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.pad(t, (pad,) * 4, mode="reflect"), window, stride=1)

    mx, my = mean(x), mean(y)
    vx, vy, cov = mean(x * x) - mx**2, mean(y * y) - my**2, mean(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.flatten(1).mean(dim=1)


def image_score(defect_map: torch.Tensor, pool: int) -> torch.Tensor:
    """The image score of DRAEM: the maximum of the defect map (N, H, W) after a `pool` x `pool` mean filter."""
    if pool > 1:
        defect_map = F.avg_pool2d(defect_map[:, None], pool, stride=1, padding=pool // 2, count_include_pad=False)[:, 0]
    return defect_map.flatten(1).amax(dim=1)


class DRAEM(TrainedDetector):
    """``DRAEM(epochs=20).fit(normal, val=val)``: full-resolution defect maps from synthetic defects."""

    name = "draem"
    Config = DRAEMConfig

    def _build_network(self, spec: ImageSpec) -> nn.Module:
        return DRAEMNetwork(spec.channels, self.config.width, self.config.depth, size=tuple(spec.size))

    def _fit_one(self, normal: ImageDataset, anomalous: ImageDataset | None = None, *, val: ImageDataset | None = None,
                 on_validation=None):
        cfg = self.config
        network = self._start_fit(normal, anomalous, val)
        batches, steps = self._batches(normal, anomalous)

        def validate() -> float:
            return validation_value("auroc", val, self.score(val, maps=False).image)

        self.history_, best = train_and_select(
            network, self._loss, batches, cfg, steps_per_epoch=steps,
            validate=validate if has_both_classes(val) else None, description=f"draem (width {cfg.width})",
            on_validation=on_validation,
        )
        self.best_epoch_, self.stopped_epoch_ = best.epoch, best.stopped_epoch
        self.synthetic_ = "+".join(cfg.defects or DEFAULT_DEFECTS)
        network.eval()
        self._fit_normal_statistics(normal)
        return self

    @torch.inference_mode()
    def _fit_normal_statistics(self, normal: ImageDataset) -> None:
        """Per-pixel mean and std of the selected network's defect maps of the normal training images
        (after val selection, so the val checks during training rank by the map as it is)."""
        network = self.network_
        maps = torch.cat([self._defect_map(batch).cpu() for batch in self._normalised_batches(normal.raw_images())])
        network.normal_mean.copy_(maps.mean(dim=0))
        network.normal_std.copy_(maps.std(dim=0) if len(maps) > 1 else torch.zeros_like(maps[0]))
        network.normal_count.fill_(len(maps))

    def _batches(self, normal: ImageDataset, anomalous: ImageDataset | None):
        """(batches() for train_epochs, steps per epoch). A batch is (images, clean targets, masks,
        recon rows, mask rows): normalised tensors; rows say which images count in each loss."""
        cfg, spec, device = self.config, self.spec_, self.device
        normal_px = normal.raw_images()
        n_lab = 0 if anomalous is None else len(anomalous)
        if n_lab:
            lab_px, lab_masks = anomalous.raw_images(), torch.from_numpy(anomalous.masks())
            lab_known = torch.from_numpy(anomalous.mask_available)
        generator = torch.Generator().manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        kinds = cfg.defects or DEFAULT_DEFECTS
        augment = augment_parts(cfg.augment)

        def batches():
            for batch in mixed_batches(len(normal_px), n_lab, batch_size=cfg.batch_size,
                                       anomaly_share=cfg.anomaly_share, synthetic=False, generator=generator):
                clean = normal_px[batch.normal]
                if augment:
                    clean = augment_images(clean, augment, generator)
                defective, masks = synthetic_defects(clean.numpy(), rng, kinds=kinds, clean_share=cfg.clean_share,
                                                     source_ops=cfg.source_ops, source_turns=cfg.source_turns)
                images, masks = torch.from_numpy(defective), torch.from_numpy(masks)
                targets, known = clean, torch.ones(len(clean), dtype=torch.bool)
                recon_rows = torch.ones(len(clean), dtype=torch.bool)
                if len(batch.anomalous):
                    idx = batch.anomalous
                    images = torch.cat([images, lab_px[idx]])
                    masks, known = torch.cat([masks, lab_masks[idx]]), torch.cat([known, lab_known[idx]])
                    targets = torch.cat([targets, lab_px[idx]])  # unused: recon_rows is False there
                    recon_rows = torch.cat([recon_rows, torch.zeros(len(idx), dtype=torch.bool)])
                as_input = lambda px: normalise(px.to(device), spec).contiguous(memory_format=torch.channels_last)  # noqa: E731
                yield (as_input(images), as_input(targets), masks.to(device).long(), recon_rows.to(device),
                       known.to(device))

        mixing = n_lab > 0
        return batches, n_batches(len(normal_px), cfg.batch_size, cfg.anomaly_share if mixing else 0.0)

    def _loss(self, model: nn.Module, batch) -> torch.Tensor:
        images, targets, masks, recon_rows, known = batch
        reconstruction, logits = model(images)
        # normalised images span about 4 units (mean +- 2 std): SSIM's constants on that scale
        rec, tgt = reconstruction[recon_rows], targets[recon_rows]
        loss = F.mse_loss(rec, tgt) + (1 - ssim(rec, tgt, data_range=4.0)).mean()
        if known.any():
            loss = loss + focal(logits[known], masks[known], gamma=self.config.focal_gamma)
        if not known.all():  # labelled defects without a mask: the strongest pixels should say "defect"
            defect_logits = logits[~known, 0].flatten(1)
            top = defect_logits.topk(max(1, defect_logits.shape[1] // 100), dim=1).values.mean(dim=1)
            loss = loss + F.binary_cross_entropy_with_logits(top, torch.ones_like(top))
        return loss

    def _defect_map(self, batch: torch.Tensor) -> torch.Tensor:
        _, logits = self.network_(batch.contiguous(memory_format=torch.channels_last))
        return torch.sigmoid(logits[:, 0])

    def _standardised(self, defect_map: torch.Tensor) -> torch.Tensor:
        """`defect_map` (N, H, W) as z-scores of the training normals' maps, pixel by pixel."""
        network = self.network_
        mean, std = network.normal_mean, network.normal_std
        if self.config.tta:  # a flipped image's map is in flipped coordinates: flip-symmetric statistics
            def flip_mean(t: torch.Tensor) -> torch.Tensor:
                return torch.stack([t, t.flip(-1), t.flip(-2), t.flip((-2, -1))]).mean(dim=0)

            second_moment = flip_mean(std**2 + mean**2)
            mean = flip_mean(mean)
            std = (second_moment - mean**2).clamp_min(0).sqrt()
        return (defect_map - mean) / (std + STANDARDISE_EPS)

    def _forward_scores(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        defect_map = self._defect_map(batch)
        mode = self.config.standardise
        # before the statistics exist (the val checks during training) the map is read as it is
        if mode != "none" and int(getattr(self.network_, "normal_count", 0)):
            standardised = self._standardised(defect_map)
            return image_score(standardised, self.config.score_pool), (standardised if mode == "both" else defect_map)
        return image_score(defect_map, self.config.score_pool), defect_map
