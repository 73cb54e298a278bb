"""A supervised / semi-supervised image classifier with a choice of imbalance losses.

backbone -> global average pool -> linear layer to two logits (normal, anomalous). The image score
is the logit margin f_1 - f_0 (sigmoid(score) is the softmax probability of "anomalous", and score 0
is the paper's 0.5 threshold; the margin does not saturate, so scores keep their order where the
probability rounds to 1). Maps are class-activation maps (CAM, Zhou et al. 2016): the linear
layer's anomalous-minus-normal weights applied to the feature map; their spatial mean is the score.

This is the supervised baseline family of the LIAC paper (Wan et al., IEEE TIM 2022: WCE, FL, AsyL,
LAL, EL) and, with loss="lil", its logit inducing loss on a single network; `models/liac.py` adds
the abnormality capturing module on top of it. As in the paper, the weights of the epoch with the
highest validation F1 are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

import torch
from torch import nn

from defectmine.data.dataset import ImageDataset
from defectmine.data.images import ImageSpec
from defectmine.errors import ConfigError
from defectmine.models.losses import classification_loss, loss_parameters, pair_distance
from defectmine.models.trained import TrainedDetector
from defectmine.models.training import TrainingConfig, anomalous_slots


@dataclass
class ClassifierConfig(TrainingConfig):
    """Hyperparameters of the image classifier (the fields of `training.TrainingConfig`, and):

    stride: output stride of the pooled feature map (32: a timm ResNet's last stage, as in the
        LIAC paper; the CAM has input_size / stride cells).
    loss: a key of CLASSIFICATION_LOSSES ("ce", "weighted_ce", "focal", "asymmetric", "lal", "el",
        "lil"); loss_params: its parameters, e.g. {"gamma": 2.0}. Losses that take class priors
        get the class frequencies of the training batches unless loss_params sets "priors".
    anomaly_share: share of each batch that is anomalous (labelled anomalies are drawn with
        replacement). None: the labelled anomalies' share of the training set, as with plain
        shuffling in the paper (at least one per batch; 0.25 when only synthetic anomalies are used).
    eval_every: validate every n epochs (and after the last) when val has both classes, and keep
        the weights of the best validation F1 (at its max-F1 threshold; a tie keeps the earlier
        epoch); every epoch by default, as in the paper.
    The optimiser is the shared one (Adam, cosine schedule); the paper used SGD (lr 1e-3, batch 64,
    100 epochs, lr halved at epoch 50) on an ImageNet-pretrained ResNet34.
    """

    detector_name: ClassVar[str] = "classifier"

    stride: int = 32
    loss: str = "lil"
    loss_params: dict = field(default_factory=dict)
    eval_every: int = 1

    def __post_init__(self):
        super().__post_init__()
        name = self.detector_name
        if self.anomaly_share is not None and not 0.0 < self.anomaly_share < 1.0:
            raise ConfigError(
                f"{name}: anomaly_share={self.anomaly_share} must be in (0, 1), or None for the training-set share."
            )
        if not isinstance(self.loss_params, dict):
            raise ConfigError(f"{name}: loss_params must be a dict of loss parameters, e.g. {{'gamma': 2.0}}.")
        classification_loss(self.loss, **self.loss_params)  # validates the name and the parameters


class ClassifierOutput(NamedTuple):
    """logits (N, 2); cam (N, h, w) whose spatial mean is the margin f_1 - f_0; distance (N,) or None."""

    logits: torch.Tensor
    cam: torch.Tensor
    distance: torch.Tensor | None


class ClassifierNetwork(nn.Module):
    """Backbones -> global average pool -> linear layer to two logits.

    With one backbone this is a plain classifier. With two and ``with_distance`` it is LIAC's
    network: the pooled features of both and their distance D(x) (equation 10, `pair_distance`)
    feed the linear layer (equation 12).
    """

    def __init__(self, backbones: list[nn.Module], channels: int, with_distance: bool = False):
        super().__init__()
        self.backbones = nn.ModuleList(backbones)
        self.with_distance = with_distance
        self.n_map_channels = channels * len(backbones)
        self.head = nn.Linear(self.n_map_channels + int(with_distance), 2)

    def forward(self, x: torch.Tensor) -> ClassifierOutput:
        maps = [backbone(x) for backbone in self.backbones]
        pooled = [m.mean(dim=(2, 3)) for m in maps]
        distance = pair_distance(pooled[0], pooled[1]) if self.with_distance else None
        features = torch.cat(pooled + ([distance[:, None]] if distance is not None else []), dim=1)
        logits = self.head(features)
        weight = self.head.weight[1] - self.head.weight[0]
        # Everything that is not spatial (bias, the D(x) term) is a per-image offset of the map, so
        # that the map's mean stays the logit margin.
        offset = (self.head.bias[1] - self.head.bias[0]).expand(x.shape[0])
        if distance is not None:
            offset = offset + distance * weight[-1]
        cam = torch.einsum("c,nchw->nhw", weight[: self.n_map_channels], torch.cat(maps, dim=1))
        return ClassifierOutput(logits, cam + offset[:, None, None], distance)


class Classifier(TrainedDetector):
    """Image classifier: ``Classifier(loss="focal", loss_params={"gamma": 2}).fit(normal, anomalous, val=val)``.

    Learned state: ``network_``, ``priors_`` (class frequencies of the training batches, given to
    prior-based losses), ``best_epoch_`` and ``best_val_f1_`` (model selection; None without a
    validation set holding both classes), ``synthetic_``, ``anomaly_share_``, ``history_``.
    """

    name = "classifier"
    Config = ClassifierConfig
    n_backbones: ClassVar[int] = 1

    def _build_network(self, spec: ImageSpec) -> nn.Module:
        backbones = [self._make_backbone(spec) for _ in range(self.n_backbones)]
        return ClassifierNetwork([b.module for b in backbones], backbones[0].out_channels, self.n_backbones > 1)

    def _loss(self, output: ClassifierOutput, labels: torch.Tensor) -> torch.Tensor:
        """Training loss of one batch; LIAC adds its abnormality capturing loss."""
        return self._loss_fn(output.logits, labels)

    def _fit_one(self, normal: ImageDataset, anomalous: ImageDataset | None = None, *, val: ImageDataset | None = None,
                 on_validation=None):
        cfg = self.config
        self._start_fit(normal, anomalous, val)
        n_anomalous = 0 if anomalous is None else len(anomalous)
        self.anomaly_share_ = self._anomaly_share(len(normal), n_anomalous)
        slots = anomalous_slots(cfg.batch_size, self.anomaly_share_)
        self.priors_ = [1.0 - slots / cfg.batch_size, slots / cfg.batch_size]
        self._loss_fn = self._make_loss()

        def loss_fn(model, batch):
            images, labels = batch
            return self._loss(model(images), labels)

        result = self._fit_network(loss_fn, normal, anomalous, val, selection="max_f1",
                                   description=f"{self.name} ({cfg.backbone}, {cfg.loss})",
                                   on_validation=on_validation, anomaly_share=self.anomaly_share_)
        self.best_val_f1_ = result.best_value
        return self

    def _anomaly_share(self, n_normal: int, n_anomalous: int) -> float:
        share = self.config.anomaly_share
        if share is not None:
            return share
        if n_anomalous == 0:
            return 0.25
        # at least one anomaly per batch: with a handful of them, rounding would otherwise give none
        return max(n_anomalous / (n_normal + n_anomalous), 1.0 / self.config.batch_size)

    def _make_loss(self):
        cfg = self.config
        params = dict(cfg.loss_params)
        if "priors" in loss_parameters(cfg.loss) and "priors" not in params:
            params["priors"] = self.priors_
        return classification_loss(cfg.loss, **params)

    def _forward_scores(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The logit margin f_1 - f_0 is the image score, the class-activation map the anomaly map."""
        output = self.network_(batch)
        return output.logits[:, 1] - output.logits[:, 0], output.cam

    def _extra_state(self) -> dict:
        return {
            "priors": self.priors_,
            "anomaly_share": self.anomaly_share_,
            "best_epoch": self.best_epoch_,
            "best_val_f1": self.best_val_f1_,
            "synthetic": self.synthetic_,
        }

    def _set_extra_state(self, state: dict) -> None:
        self.priors_ = state.get("priors")
        self.anomaly_share_ = state.get("anomaly_share")
        self.best_epoch_ = state.get("best_epoch")
        self.best_val_f1_ = state.get("best_val_f1")
        self.synthetic_ = state.get("synthetic")
