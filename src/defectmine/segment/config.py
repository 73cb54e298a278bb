"""The training hyperparameters every segmenter shares, validated at construction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from defectmine.errors import ConfigError
from defectmine.evaluation.segmentation import SEGMENTATION_METRICS
from defectmine.segment.losses import loss_parameters, segmentation_loss

# Loss parameters the segmenter computes from the training masks; typed-in values are refused.
COMPUTED_LOSS_PARAMETERS = ("pixel_counts",)


@dataclass
class SegmenterConfig:
    """Hyperparameters of segmenter training (Adam, cosine schedule, as the DLI paper):

    loss: a key of SEGMENTATION_LOSSES ("bce_dice", "bce", "focal", "balanced", "weighted_ce");
        loss_params: its parameters, e.g. {"gamma": 2.0, "dice_weight": 0.5, "per_image_dice": true}.
        The class pixel counts of "balanced" and "weighted_ce" come from the training masks.
    epochs: training epochs.
    batch_size: images per training batch.
    lr: learning rate of Adam (5e-4 in the paper), cosine-annealed over the epochs.
    weight_decay: weight decay of Adam (0 in the paper).
    defect_share: share of each batch drawn, with replacement, from the training images that have
        defect pixels (oversampling rare defects); the rest is a shuffled pass over the defect-free
        images. None: plain shuffled batches over all training images, as in the paper.
    augment: random 90-degree turns and mirroring, applied jointly to image and mask.
    selection_metric: what model selection and the threshold maximise on val: "mean_iou" (mean of
        the per-class IoU), "mean_dice", "pooled_iou" (the paper's equation 8) or
        "defective_pooled_iou" (equation 8 over the images with defects).
    eval_every: validate every n epochs (and after the last) when val has defect pixels, and keep
        the weights of the best value at the paper's threshold 0.5.
    patience: early stopping - end training once this many validations in a row have not beaten
        the best one (None: train every epoch).
    tune_threshold: after training, choose the threshold on val (otherwise 0.5).
    predict_batch_size: images per batch when predicting.
    seed: training seed (weights, batches, augmentation).
    device: auto (CUDA when present), cpu or cuda.
    quiet: no progress output.
    """

    segmenter_name: ClassVar[str] = "segmenter"
    # Options that name a weights file or download: reset on load (the weights come from the model).
    weight_options: ClassVar[tuple[str, ...]] = ()

    loss: str = "bce_dice"
    loss_params: dict = field(default_factory=dict)
    epochs: int = 30
    batch_size: int = 16
    lr: float = 5e-4
    weight_decay: float = 0.0
    defect_share: float | None = 0.25
    augment: bool = True
    selection_metric: str = "mean_iou"
    eval_every: int = 1
    patience: int | None = None
    tune_threshold: bool = True
    predict_batch_size: int = 32
    seed: int = 0
    device: str = "auto"
    quiet: bool = False

    def __post_init__(self):
        name = self.segmenter_name
        for option, low in (("epochs", 1), ("batch_size", 2), ("eval_every", 1), ("predict_batch_size", 1)):
            if getattr(self, option) < low:
                raise ConfigError(f"{name}: {option}={getattr(self, option)} must be >= {low}.")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"{name}: patience={self.patience} must be >= 1 (validations without gain), or null.")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ConfigError(f"{name}: lr={self.lr} must be positive and weight_decay={self.weight_decay} >= 0.")
        if self.defect_share is not None and not 0.0 < self.defect_share < 1.0:
            raise ConfigError(
                f"{name}: defect_share={self.defect_share} must be in (0, 1), e.g. 0.25, or None for plain shuffling."
            )
        if self.selection_metric not in SEGMENTATION_METRICS:
            raise ConfigError(
                f"{name}: selection_metric={self.selection_metric!r} is unknown. "
                f"Fix: use one of {', '.join(SEGMENTATION_METRICS)}."
            )
        computed = sorted(set(self.loss_params) & set(COMPUTED_LOSS_PARAMETERS))
        if computed:
            raise ConfigError(
                f"{name}: loss_params sets {', '.join(computed)}, which the segmenter computes from the training "
                "masks. Fix: drop it from loss_params."
            )
        segmentation_loss(self.loss, **self.loss_params)  # validates the name and the parameters

    def loss_function(self, pixel_counts: list[int]):
        """The configured loss, given the training masks' class pixel counts when it takes them."""
        params = dict(self.loss_params)
        if "pixel_counts" in loss_parameters(self.loss):
            params["pixel_counts"] = pixel_counts
        return segmentation_loss(self.loss, **params)
