"""SegDec: masks teach the image-level decision (mixed supervision).

A segmentation network and a decision head trained together, after the segmentation-decision networks
for surface defects (Tabernik et al. 2020; Božič et al. 2021, "Mixed supervision for surface-defect
detection"): a U-Net (the segmenters' `build_unet`, any of their encoders) maps an image to a defect
logit per pixel; the decision head reads the encoder's deepest features beside the pooled segmentation
map and gives one image logit.

Training batches mix, as for every detector (`training.mixed_batches`): normal images (their mask is
known: all background), labelled anomalies (with their mask when the dataset has one, else the image
label only), and - with injection on - Dynamic Label Injection (`data.injection`) pasting the labelled
defects into a share of the normal images, whose pasted masks become pixel labels and whose image labels
become "anomalous". Loss = segmentation loss over the defective images whose mask is known (per-image
Dice by default, so that a blowhole of 0.1 % of a tile weighs as much as an uneven region of 30 %) and
pixel BCE over the known clean ones (`pixel_loss`) + BCE of the image logit over every image.
Without labelled anomalies, synthetic ones (cut-paste) train the decision head with image labels only.

Image score: the decision logit; anomaly map: the per-pixel defect probability at full resolution
(no stride-8 map stretched up).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from defectmine.data.dataset import ImageDataset
from defectmine.data.images import ImageSpec, normalise
from defectmine.data.injection import DEFAULT_METHODS
from defectmine.errors import ConfigError
from defectmine.evaluation.selection import validation_value
from defectmine.models.synthetic import resolve_synthetic, synthesize
from defectmine.models.trained import TrainedDetector
from defectmine.models.augment import augment_parts
from defectmine.models.training import TrainingConfig, has_both_classes, mixed_batches, n_batches, train_and_select
from defectmine.segment.augment import flips_and_rotations
from defectmine.segment.losses import loss_parameters, segmentation_loss
from defectmine.segment.networks import build_unet, check_encoder

IMAGE_SCORES = ("decision", "map_max", "mean")
SELECTIONS = ("image", "image+pixel")
# Pixels sampled from the validation maps for the pixel AUROC of model selection (seeded, fixed).
_SELECTION_PIXELS = 400_000


@dataclass
class SegDecConfig(TrainingConfig):
    """Hyperparameters of SegDec: those of `TrainingConfig` (backbone = the U-Net's encoder: "cnn" or a
    timm name such as resnet18; backbone_weights = None, "pretrained" or a local weights file, e.g. our
    self-supervised backbone.safetensors), and

    encoder_depth: encoder stages (features at strides 2 .. 2**depth); image sides must be multiples
        of 2**depth.
    decoder_channels: channels of each decoder block, deepest first (one per encoder stage). The
        default (32, 16, 8) is a quarter of the segmenters' (128, 64, 32): the full-resolution block
        dominates the cost, and a binary map needs few channels (2-core CPU budget).
    width: base channel count of the "cnn" encoder (16 by default here: the decoder needs features).
    seg_loss: a segmenter loss by name (bce_dice, bce, focal, balanced, weighted_ce) over the images
        whose mask is known; seg_loss_params: its parameters (per-image Dice by default).
    seg_weight: weight of the segmentation loss beside the image BCE (0: image labels only).
    detach_decision: stop the decision head's gradient at the segmentation network (Božič et al.'s
        gradient-flow adjustment: the masks alone shape the features; the head only reads them).
    injection: Dynamic Label Injection of the labelled defects (with masks) into normal images.
    keep_clean: share of the normal images of a batch that DLI leaves defect-free.
    injection_methods: "poisson" and/or "cutpaste" (chosen at random per paste).
    image_score: "decision" (the head's logit), "map_max" (largest pixel probability) or "mean" (the
        mean of the decision probability and the largest pixel probability).
    selection: what model selection maximises on val: "image" (image AUROC) or "image+pixel" (the
        mean of image AUROC and pixel AUROC over the val images whose masks are known; image AUROC
        alone where val has no defect mask).
    """

    detector_name: ClassVar[str] = "segdec"
    # the U-Net's encoder is built by segment.networks with the default cnn / timm layers
    ignored_levers: ClassVar[tuple[str, ...]] = ("depth", "norm", "bn_momentum")

    encoder_depth: int = 3
    decoder_channels: list[int] | None = field(default_factory=lambda: [32, 16, 8])
    width: int = 16
    seg_loss: str = "bce_dice"
    seg_loss_params: dict = field(default_factory=lambda: {"per_image_dice": True})
    seg_weight: float = 1.0
    detach_decision: bool = False
    injection: bool = True
    keep_clean: float = 0.5
    injection_methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    image_score: str = "decision"
    selection: str = "image+pixel"
    anomaly_share: float | None = 0.25

    def __post_init__(self):
        super().__post_init__()
        check_encoder(self.backbone, self.encoder_depth, self.decoder_channels, self.backbone_weights)
        if self.drop_path:  # the U-Net's encoder is built by segment.networks, which takes no drop_path
            raise ConfigError(f"segdec: drop_path={self.drop_path} does not apply to its U-Net encoder. Fix: drop_path=0.")
        unknown = sorted(set(self.seg_loss_params) - set(loss_parameters(self.seg_loss)))
        if unknown:
            raise ConfigError(f"segdec: seg_loss {self.seg_loss!r} takes no parameter(s) {', '.join(unknown)}; "
                              f"it takes {', '.join(loss_parameters(self.seg_loss))}.")
        if not self.seg_weight >= 0:
            raise ConfigError(f"segdec: seg_weight={self.seg_weight} must be >= 0.")
        if not 0.0 <= self.keep_clean <= 1.0:
            raise ConfigError(f"segdec: keep_clean={self.keep_clean} must be in [0, 1].")
        if self.image_score not in IMAGE_SCORES:
            raise ConfigError(f"segdec: image_score={self.image_score!r}; use one of {', '.join(IMAGE_SCORES)}.")
        if self.selection not in SELECTIONS:
            raise ConfigError(f"segdec: selection={self.selection!r}; use one of {', '.join(SELECTIONS)}.")
        if self.anomaly_share is None or not 0.0 <= self.anomaly_share < 1.0:
            raise ConfigError(f"segdec: anomaly_share={self.anomaly_share} must be in [0, 1).")


class SegDecNetwork(nn.Module):
    """U-Net + decision head; forward returns (image logits (B,), defect logits (B, H, W))."""

    def __init__(self, unet: nn.Module, detach: bool, hidden: int = 32):
        super().__init__()
        self.unet = unet
        self.detach = detach
        deepest = unet.encoder.out_channels[-1]
        self.decision = nn.Sequential(
            nn.Conv2d(deepest + 1, hidden, 3, padding=1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
        )
        # global mean and max of the decision features, and of the segmentation logits
        self.classify = nn.Linear(2 * hidden + 2, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.unet.encoder(x)
        seg = self.unet.segmentation_head(self.unet.decoder(features))
        deepest = features[-1]
        (h, w), (u, v) = seg.shape[-2:], deepest.shape[-2:]
        # whole blocks: the same as adaptive pooling, and a fixed kernel that the ONNX exporter takes
        seg_small = (F.max_pool2d(seg, (int(h // u), int(w // v))) if h % u == 0 and w % v == 0
                     else F.adaptive_max_pool2d(seg, (u, v)))
        head_in = torch.cat([deepest, seg_small], dim=1)
        seg_stats = torch.cat([seg.mean(dim=(2, 3)), seg.amax(dim=(2, 3))], dim=1)
        if self.detach:
            head_in, seg_stats = head_in.detach(), seg_stats.detach()
        h = self.decision(head_in)
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3)), seg_stats], dim=1)
        return self.classify(pooled).squeeze(1), seg[:, 0]


class SegDec(TrainedDetector):
    """Mixed-supervision detector: ``SegDec(epochs=25).fit(normal, anomalous, val=val)``; anomalous images
    with masks teach the pixels, those without teach the image decision only."""

    name = "segdec"
    Config = SegDecConfig

    def _build_network(self, spec: ImageSpec) -> nn.Module:
        cfg = self.config
        unet = build_unet(cfg.backbone, 1, spec.channels, depth=cfg.encoder_depth, width=cfg.width,
                          decoder_channels=cfg.decoder_channels,
                          weights=cfg.backbone_weights)
        if cfg.freeze_backbone:
            unet.encoder.requires_grad_(False)
        return SegDecNetwork(unet, cfg.detach_decision)

    def _fit_one(self, normal: ImageDataset, anomalous: ImageDataset | None = None, *, val: ImageDataset | None = None,
                 on_validation=None):
        cfg = self.config
        side = 2 ** cfg.encoder_depth
        if any(s % side for s in normal.spec.size):
            raise ConfigError(f"segdec: image sides {tuple(normal.spec.size)} must be multiples of {side} "
                              f"(encoder_depth={cfg.encoder_depth}). Fix: --image-size a multiple of {side}.")
        network = self._start_fit(normal, anomalous, val)
        device = self.device
        sources = _TrainingSources.build(normal, anomalous, cfg, device)
        self.synthetic_ = sources.synthetic
        seg_loss = segmentation_loss(cfg.seg_loss, **_computed(cfg, sources))
        generator = torch.Generator().manual_seed(cfg.seed)

        def loss_fn(model, batch):
            images, masks, known, labels = batch
            image_logits, seg_logits = model(images)
            loss = F.binary_cross_entropy_with_logits(image_logits, labels)
            if cfg.seg_weight > 0 and known.any():
                loss = loss + cfg.seg_weight * pixel_loss(seg_loss, seg_logits, masks, known)
            return loss

        with_pixels = cfg.selection == "image+pixel" and _has_defect_masks(val)

        def validate() -> float:
            scores = self.score(val, maps=with_pixels)
            value = validation_value("auroc", val, scores.image)
            return 0.5 * (value + _pixel_auroc(val, scores.maps, cfg.seed)) if with_pixels else value

        share = cfg.anomaly_share if sources.mixing else 0.0
        self.history_, best = train_and_select(
            network, loss_fn, lambda: sources.batches(generator, self.spec_), cfg,
            steps_per_epoch=n_batches(len(sources.normal), cfg.batch_size, share),
            validate=validate if has_both_classes(val) else None, description=f"segdec ({cfg.backbone})",
            on_validation=on_validation,
        )
        self.best_epoch_, self.stopped_epoch_ = best.epoch, best.stopped_epoch
        self.n_with_masks_ = sources.n_with_masks
        network.eval()
        return self

    def _forward_scores(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image_logits, seg_logits = self.network_(batch)
        pixels = torch.sigmoid(seg_logits)
        how = self.config.image_score
        if how == "decision":
            image = image_logits
        elif how == "map_max":
            image = pixels.flatten(1).amax(dim=1)
        else:
            image = 0.5 * (torch.sigmoid(image_logits) + pixels.flatten(1).amax(dim=1))
        return image, pixels

    def _extra_state(self) -> dict:
        return {"n_with_masks": getattr(self, "n_with_masks_", None)}


def pixel_loss(seg_loss, seg_logits: torch.Tensor, masks: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """The segmentation loss over the images whose mask is known, split by whether they show a defect:
    `seg_loss` (e.g. BCE + per-image Dice) over the defective ones, plain pixel BCE over the clean ones,
    weighted by their counts. A Dice term on an all-background mask only says "predict nothing" (its
    best value needs every probability at 0), which drowned the few defective images of each batch
    when every image got its own Dice."""
    defective = known & (masks.flatten(1) > 0).any(dim=1)
    clean = known & ~defective
    n_known = int(known.sum())
    loss = seg_logits.new_zeros(())
    if defective.any():
        loss = loss + seg_loss(seg_logits[defective].unsqueeze(1), masks[defective]) * (int(defective.sum()) / n_known)
    if clean.any():
        background = F.binary_cross_entropy_with_logits(seg_logits[clean], torch.zeros_like(seg_logits[clean]))
        loss = loss + background * (int(clean.sum()) / n_known)
    return loss


def _has_defect_masks(val: ImageDataset | None) -> bool:
    return val is not None and val.has_masks and bool(val.masks()[val.mask_available].any())


def _pixel_auroc(val: ImageDataset, maps: np.ndarray, seed: int) -> float:
    """Pixel AUROC of `maps` over the val images whose masks are known (a seeded sample of pixels)."""
    from sklearn.metrics import roc_auc_score

    available = np.asarray(val.mask_available, dtype=bool)
    truth, values = val.masks()[available].reshape(-1), maps[available].reshape(-1)
    if len(truth) > _SELECTION_PIXELS:
        rows = np.random.default_rng(seed).choice(len(truth), _SELECTION_PIXELS, replace=False)
        truth, values = truth[rows], values[rows]
    return float(roc_auc_score(truth, values)) if 0 < truth.sum() < len(truth) else 0.5


def _computed(cfg: SegDecConfig, sources: "_TrainingSources") -> dict:
    """The segmentation loss's parameters, with class pixel counts filled in where the loss takes them."""
    params = dict(cfg.seg_loss_params)
    if "pixel_counts" in loss_parameters(cfg.seg_loss) and "pixel_counts" not in params:
        params["pixel_counts"] = sources.pixel_counts
    return params


@dataclass
class _TrainingSources:
    """Training pixels on the device: normal images, labelled anomalies with their binary masks (and
    which masks are known), the DLI hook over the anomalies' defects, and the synthetic kind."""

    normal: torch.Tensor
    anomalous: torch.Tensor | None
    anomalous_masks: torch.Tensor | None
    anomalous_known: torch.Tensor | None
    injection: object | None
    synthetic: str
    config: SegDecConfig
    pixel_counts: list[int]
    n_with_masks: int

    @property
    def mixing(self) -> bool:
        return self.anomalous is not None or self.synthetic != "none"

    @classmethod
    def build(cls, normal: ImageDataset, anomalous: ImageDataset | None, cfg: SegDecConfig,
              device: torch.device) -> "_TrainingSources":
        normal_px = normal.raw_images().to(device)
        height, width = normal.spec.size
        anomalous_px = masks = known = injection = None
        n_known = 0
        defect_pixels = 0
        if anomalous is not None and len(anomalous):
            anomalous_px = anomalous.raw_images().to(device)
            available = torch.from_numpy(np.asarray(anomalous.mask_available, dtype=bool))
            class_masks = anomalous.class_masks()
            masks = torch.from_numpy((class_masks > 0).astype(np.int64)).to(device)
            # an anomaly whose mask shows no defect pixel is treated as unknown, not as all background
            known = (available & masks.flatten(1).any(dim=1).cpu()).to(device)
            n_known = int(known.sum())
            defect_pixels = int(masks[known].sum())
            if cfg.injection and n_known:
                injection = _injection(anomalous, class_masks, known.cpu().numpy(), cfg)
        n_anomalous = 0 if anomalous_px is None else len(anomalous_px)
        total = (len(normal_px) + n_known) * height * width
        return cls(normal_px, anomalous_px, masks, known, injection, resolve_synthetic(cfg.synthetic, n_anomalous),
                   cfg, [total - defect_pixels, defect_pixels], n_known)

    def batches(self, generator: torch.Generator, spec: ImageSpec):
        """One epoch of (normalised images, binary masks (B, H, W), mask known (B,), image labels (B,))."""
        device = self.normal.device
        n_anomalous = 0 if self.anomalous is None else len(self.anomalous)
        empty = torch.zeros((0, *self.normal.shape[-2:]), dtype=torch.int64, device=device)
        for batch in mixed_batches(len(self.normal), n_anomalous, batch_size=self.config.batch_size,
                                   anomaly_share=self.config.anomaly_share, synthetic=self.synthetic != "none",
                                   generator=generator):
            images = self.normal[batch.normal.to(device)]
            masks = torch.zeros((len(images), *images.shape[-2:]), dtype=torch.int64, device=device)
            if self.injection is not None:
                images, masks = self.injection(images, masks, generator)
                masks = (masks > 0).to(torch.int64)
            parts, mask_parts = [images], [masks]
            known = [torch.ones(len(images), dtype=torch.bool, device=device)]
            if len(batch.anomalous):
                rows = batch.anomalous.to(device)
                parts.append(self.anomalous[rows])
                mask_parts.append(self.anomalous_masks[rows])
                known.append(self.anomalous_known[rows])
            if batch.n_synthetic:
                source = torch.randint(0, len(self.normal), (batch.n_synthetic,), generator=generator)
                parts.append(synthesize(self.normal[source.to(device)], self.synthetic, generator))
                mask_parts.append(empty.new_zeros((batch.n_synthetic, *empty.shape[1:])))
                known.append(torch.zeros(batch.n_synthetic, dtype=torch.bool, device=device))
            pixels, masks, known = torch.cat(parts), torch.cat(mask_parts), torch.cat(known)
            labels = torch.zeros(len(pixels), device=device)
            labels[len(parts[0]):] = 1.0
            labels[: len(parts[0])] = (masks[: len(parts[0])].flatten(1) > 0).any(dim=1).float()
            if augment_parts(self.config.augment):  # any augment: SegDec's joint flips and turns of image and mask
                pixels, masks = flips_and_rotations(pixels, masks, generator)
            yield normalise(pixels, spec).contiguous(memory_format=torch.channels_last), masks, known, labels


def _injection(anomalous: ImageDataset, class_masks: np.ndarray, known: np.ndarray, cfg: SegDecConfig):
    """DLI over the labelled defects with known masks (their own classes; classes without a region are
    left out rather than refused: with K = 10 some rare class may have no example)."""
    from defectmine.data.injection import DynamicLabelInjection, defect_pool

    rows = np.flatnonzero(known)
    pool = defect_pool(anomalous.subset(rows).raw_images(), class_masks[rows], anomalous.classes)
    present = [c for c in range(1, len(pool.classes)) if pool.counts[c]]
    return DynamicLabelInjection(pool, methods=cfg.injection_methods, keep_clean=cfg.keep_clean, classes=present)
