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
from defectmine.models import ensemble
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

    Subclasses implement `_fit_one(normal, anomalous, val=, on_validation=)` (one network, trained and
    selected on val) and `_forward_scores(batch) -> (image scores (B,), maps (B, u, v))` on normalised
    channels_last batches; `score` upsamples low-resolution maps to the input size (maps already at
    the input size are kept).
    Their config derives from `training.TrainingConfig` (score_batch_size, seed, device, ensemble, ...).
    With `ensemble` n > 1, `fit` trains n members (seeds seed .. seed + n - 1) and scores are the mean of
    the members' standardised scores (`models.ensemble`); ``members_`` holds them, ``network_`` their
    networks (an ``nn.ModuleList``, saved in one weights file).
    """

    def __init__(self, **params):
        super().__init__(**params)
        self.members_: list[TrainedDetector] = []
        self.standardisers_: list[tuple[float, float]] = []

    def fit(self, normal: ImageDataset, anomalous: ImageDataset | None = None, *, val: ImageDataset | None = None,
            on_validation=None):
        """Learn from normal images and, when given, labelled anomalous images; keep the weights of the
        best validation value when `val` holds both classes. Returns self.

        on_validation(epoch, value): called after each validation during training (a tuner reports to
            its pruner there, and may raise to abandon the fit); weights are the same with or without it.
            An ensemble calls it for its first member only, so a pruner sees one validation curve.
        With `ensemble` n > 1, the members are fitted one after another, each selected on val on its own;
        each is then standardised by its scores on val (on the normal training images without val).
        """
        size = self.config.ensemble
        if size == 1:
            self.members_, self.standardisers_ = [], []
            return self._fit_one(normal, anomalous, val=val, on_validation=on_validation)
        members = []
        for index in range(size):
            member = self._member(index)
            member._fit_one(normal, anomalous, val=val, on_validation=on_validation if index == 0 else None)
            members.append(member)
        reference = val if val is not None and len(val) else normal
        self._bind_members(members, [ensemble.standardiser(m.score(reference, maps=False).image) for m in members])
        return self

    @abstractmethod
    def _fit_one(self, normal: ImageDataset, anomalous: ImageDataset | None, *, val: ImageDataset | None,
                 on_validation=None) -> "TrainedDetector":
        """Train this detector's one network (``network_``) and select it on val. Returns self."""

    # -- seed ensembles ------------------------------------------------------------------------
    def _member(self, index: int) -> "TrainedDetector":
        """An unfitted single-network detector: this configuration with `_member_options(index)`."""
        return type(self)(**{**self.get_config(), **self._member_options(index)})

    def _member_options(self, index: int) -> dict:
        """What sets member `index` apart from this configuration: one network, seed + index."""
        return {"ensemble": 1, "seed": self.config.seed + index}

    def _bind_members(self, members: list["TrainedDetector"], standardisers: list[tuple[float, float]]) -> None:
        """Make `members` this detector's ensemble: their networks become ``network_``; what a run reports
        of one fit (history, best epoch, synthetic kind) is the first member's, ``member_best_epochs_``
        has every member's."""
        first = members[0]
        self.members_ = members
        self.standardisers_ = [(float(centre), float(scale)) for centre, scale in standardisers]
        self.spec_ = first.spec_
        self.network_ = nn.ModuleList([m.network_ for m in members])
        for attribute in ("history_", "best_epoch_", "stopped_epoch_", "synthetic_"):
            setattr(self, attribute, getattr(first, attribute, None))
        self.member_best_epochs_ = [getattr(m, "best_epoch_", None) for m in members]

    def _build_model(self, spec: ImageSpec) -> nn.Module:
        if self.config.ensemble == 1:
            return self._build_network(spec)
        members = [self._member(i) for i in range(self.config.ensemble)]
        return nn.ModuleList([m._build_network(spec) for m in members])

    def _saved_state(self) -> dict:
        if not self.members_:
            return self._extra_state()
        return {"ensemble": {"standardisers": [list(s) for s in self.standardisers_],
                             "members": [m._saved_state() for m in self.members_]}}

    def _restore_saved_state(self, state: dict) -> None:
        if self.config.ensemble == 1:
            self._set_extra_state(state)
            return
        saved = state["ensemble"]
        if len(saved["members"]) != len(self.network_) or len(saved["standardisers"]) != len(self.network_):
            raise ValueError(f"ensemble of {len(self.network_)} networks, but state for {len(saved['members'])}")
        members = []
        for index, (network, member_state) in enumerate(zip(self.network_, saved["members"])):
            member = self._member(index)
            member.spec_, member.network_ = self.spec_, network
            member._restore_saved_state(member_state)
            members.append(member)
        self._bind_members(members, saved["standardisers"])  # _bind_members makes them float pairs

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

    def _image_scores(self, batch: torch.Tensor) -> torch.Tensor:
        """Image scores (B,) of one network (a subclass may compute them without its maps)."""
        return self._forward_scores(batch)[0]

    def image_scores_of(self, batch: torch.Tensor) -> torch.Tensor:
        """Image scores (B,) of a normalised batch: what Grad-CAM explains (an ensemble's: combined)."""
        if not self.members_:
            return self._image_scores(batch)
        return ensemble.standardised_mean([m._image_scores(batch) for m in self.members_], self.standardisers_)

    def _scores(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`_forward_scores` of the one network, or the ensemble's combination of its members'."""
        if not self.members_:
            return self._forward_scores(batch)
        return ensemble.combine([m._forward_scores(batch) for m in self.members_], self.standardisers_)

    def _flip_averaged_scores(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`_scores` averaged over the identity, horizontal, vertical and both flips; each map
        flipped back before the mean, so maps stay aligned with the input."""
        images, maps = [], []
        for dims in ((), (-1,), (-2,), (-2, -1)):
            flipped = batch.flip(dims) if dims else batch
            image, low_res = self._scores(flipped.contiguous(memory_format=torch.channels_last))
            images.append(image)
            maps.append(low_res.flip(dims) if dims else low_res)
        return torch.stack(images).mean(0), torch.stack(maps).mean(0)

    def _normalised_batches(self, pixels: torch.Tensor):
        """uint8 `pixels` (N, C, H, W) in batches of `score_batch_size`, on the device, normalised as in the fit."""
        step = self.config.score_batch_size
        for start in range(0, len(pixels), step):
            yield normalise(pixels[start:start + step].to(self.device), self.spec_)

    @torch.inference_mode()
    def score(self, images: ImageDataset | torch.Tensor, *, maps: bool = True, heatmap: str = "native") -> Scores:
        """Image scores and, unless maps=False, maps at the input size.

        heatmap: "native" (the detector's own map, Gaussian-upsampled) or "gradcam" (Grad-CAM of the
            image score at the backbone's last convolution; computed with gradients even though scoring
            runs under inference mode).
        With the config's `tta` on, native image scores and maps are the mean over the four flips of
        each image (maps flipped back first); Grad-CAM maps ignore it. An ensemble's Grad-CAM map is the
        mean of its members' (each explains its own network).
        """
        if heatmap not in HEATMAPS:
            raise ConfigError(f"heatmap={heatmap!r} is unknown. Fix: use one of {', '.join(HEATMAPS)}.")
        pixels = self._as_uint8_batch(images)
        network = self.network_
        was_training = network.training
        network.eval()
        native_maps = maps and heatmap == "native"
        tta = getattr(self.config, "tta", False)
        image_scores, all_maps = [], []
        for batch in self._normalised_batches(pixels):
            image, low_res = self._flip_averaged_scores(batch) if tta else self._scores(
                batch.contiguous(memory_format=torch.channels_last))
            image_scores.append(image.cpu())
            if native_maps:
                all_maps.append(native_maps_at(low_res, tuple(self.spec_.size)).cpu())
        network.train(was_training)
        image = torch.cat(image_scores).numpy() if image_scores else np.zeros(0)
        full = torch.cat(all_maps).numpy().astype(np.float32) if native_maps and all_maps else None
        if maps and heatmap == "gradcam":
            from defectmine.explain.gradcam import detector_gradcam

            explained = self.members_ or [self]
            full = np.mean([detector_gradcam(m, pixels) for m in explained], axis=0).astype(np.float32)
        return Scores(image=image, maps=full)
