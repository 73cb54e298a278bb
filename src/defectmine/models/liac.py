"""LIAC: logit inducing with abnormality capturing (Wan, Gao and Li, IEEE TIM 2022).

The classifier of `models/classifier.py` with the paper's abnormality capturing module (ACM): two
backbones of the same structure, g_t and g_s, give pooled features f_T and f_S of an image
(equation 9); D(x) is the distance between their unit vectors (equation 10, `pair_distance`); the
linear layer sees [f_T, f_S, D(x)] (equation 12); the loss is LIL + ACL (equation 13, weight 1).
The paper optimises the parameters of both networks, (theta, phi_s, phi_t), so neither is frozen:
unlike knowledge distillation there is no fixed teacher, the two only learn to agree on normal
images and to disagree on anomalous ones. From scratch the two start from different random weights;
with the same pretrained weights D = 0 and the ACL has no gradient at first, until the classifier's
different weights on f_T and f_S have moved the two apart.

Equation 11 as printed, y D + (1 - y)(1 - D), pays D on anomalous images and 1 - D on normal ones,
which pulls anomalous pairs together and pushes normal pairs apart - the opposite of the text and
of Fig. 3 ("minimizing the distance between a pair of features of normal images, and maximizing
the distance between pair of features of anomalous images"). acl="intent" (default) implements the
stated intent, (1 - y) D + y (1 - D); acl="as_printed" keeps the printed form for the ablation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from defectmine.errors import ConfigError
from defectmine.models.classifier import Classifier, ClassifierConfig, ClassifierOutput
from defectmine.models.losses import ACL_VARIANTS, abnormality_capturing_loss


@dataclass
class LIACConfig(ClassifierConfig):
    """Hyperparameters of LIAC: those of the classifier (loss="lil" by default), and

    acl: "intent" (normal pairs pulled together, anomalous pairs pushed apart; default) or
        "as_printed" (equation 11 exactly as printed, the opposite signs).
    acl_weight: weight of the ACL in the total loss (1 in the paper, equation 13; 0 turns it off).
    """

    detector_name: ClassVar[str] = "liac"

    acl: str = "intent"
    acl_weight: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        if self.acl not in ACL_VARIANTS:
            raise ConfigError(f"liac: acl={self.acl!r}; use one of {', '.join(ACL_VARIANTS)}.")
        if not self.acl_weight >= 0:
            raise ConfigError(f"liac: acl_weight={self.acl_weight} must be >= 0.")


class LIAC(Classifier):
    """LIAC detector: ``LIAC(backbone="resnet34", backbone_weights="pretrained").fit(normal, anomalous, val=val)``.

    Learned state as the classifier's (``best_epoch_``, ``best_val_f1_``, ``priors_``, ...); the
    network holds both backbones (``network_.backbones``) and the linear layer on [f_T, f_S, D].
    """

    name = "liac"
    Config = LIACConfig
    n_backbones: ClassVar[int] = 2

    def _loss(self, output: ClassifierOutput, labels: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        loss = super()._loss(output, labels)
        if cfg.acl_weight:
            loss = loss + cfg.acl_weight * abnormality_capturing_loss(output.distance, labels, cfg.acl)
        return loss
