"""Segmentation losses as pure functions, each tested on hand-computed values.

Every loss takes logits (N, C, H, W) - one sigmoid per defect class, as in the DLI paper (Caruso et
al. 2024) - and class-index targets (N, H, W) int64: 0 is the background, c in 1..C switches channel
c - 1 on. A background pixel is one where no channel is on. Losses return the batch mean.

Each loss is a pixel term plus, with weight `dice_weight`, a soft Dice term:

    loss = (1 - dice_weight) * pixel_term + dice_weight * dice

`bce_dice` is the paper's 0.5 * BCE + 0.5 * Dice (equations 6 and 7); the others default to the pixel
term alone, and the paper's comparison couples each of them with Dice (``dice_weight=0.5``).

Dice is pooled over the whole batch by default (equation 7; the DLI code flattens everything). With
``per_image_dice=True`` it is the mean of one Dice per image and class instead: a defect covering 0.1 %
of one tile then weighs as much as a large one, where in the pooled sum it all but vanishes. Empty
(image, class) pairs score (0 + smooth) / (sum p + smooth): near 1 when nothing is predicted there.

`weighted_ce` and `balanced` weigh every pixel by the class of its ground truth, with weights from the
class pixel counts of the training masks (`pixel_counts`, background first; the segmenter computes
them, they are never typed in; left out, the batch's own counts are used). Both are weighted per-class
BCE, not softmax cross-entropy, so that they train the same sigmoid outputs as every other loss:
each pixel's BCE (averaged over the C channels) is weighted by w_y of its class y, and the batch loss
is the weighted mean sum_i w_{y_i} BCE_i / sum_i w_{y_i}, as torch's ``cross_entropy(weight=...)``.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from defectmine.errors import ConfigError, DataError, lookup

__all__ = [
    "SEGMENTATION_LOSSES", "balanced", "balanced_weights", "bce", "bce_dice", "dice_loss", "focal",
    "inverse_frequency_weights", "loss_parameters", "one_hot", "segmentation_loss", "weighted_ce",
]


def one_hot(target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(N, C, H, W) float 0/1 of class-index targets (N, H, W): channel c - 1 is class c; 0 is no channel.

    Raises DataError when the target is not integer or holds an index outside 0..n_classes.
    """
    if target.dtype.is_floating_point or target.dtype == torch.bool or target.ndim != 3:
        raise DataError(
            f"segmentation targets must be integer class indices (N, H, W); got {target.dtype} {tuple(target.shape)}."
        )
    if target.numel() and (int(target.min()) < 0 or int(target.max()) > n_classes):
        raise DataError(
            f"segmentation targets hold class indices {int(target.min())}..{int(target.max())} but the network "
            f"has {n_classes} defect classes (indices 0..{n_classes}). Fix: build masks with the model's classes."
        )
    classes = torch.arange(1, n_classes + 1, device=target.device).view(1, -1, 1, 1)
    return (target.unsqueeze(1) == classes).to(torch.float32)


def _prepare(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float logits and the one-hot target, after checking that their shapes agree."""
    if logits.ndim != 4 or tuple(target.shape) != (logits.shape[0], *logits.shape[2:]):
        raise DataError(
            f"segmentation losses take logits (N, C, H, W) and targets (N, H, W); got {tuple(logits.shape)} "
            f"and {tuple(target.shape)}."
        )
    return logits.float(), one_hot(target, logits.shape[1])


def dice_loss(
    logits: torch.Tensor, target: torch.Tensor, *, per_image: bool = False, smooth: float = 1.0
) -> torch.Tensor:
    """Soft Dice loss 1 - (2 sum p m + smooth) / (sum p + sum m + smooth), p = sigmoid(logits).

    per_image False: sums over the whole batch and every class (equation 7). True: one Dice per
    (image, class) pair, averaged.
    """
    logits, onehot = _prepare(logits, target)
    return _dice(torch.sigmoid(logits), onehot, per_image, smooth)


def _dice(probabilities: torch.Tensor, onehot: torch.Tensor, per_image: bool, smooth: float) -> torch.Tensor:
    dims = (2, 3) if per_image else (0, 1, 2, 3)
    overlap = (probabilities * onehot).sum(dims)
    total = probabilities.sum(dims) + onehot.sum(dims)
    return 1.0 - ((2.0 * overlap + smooth) / (total + smooth)).mean()


def _with_dice(
    pixel_term: torch.Tensor, logits: torch.Tensor, onehot: torch.Tensor, dice_weight: float, per_image: bool,
    smooth: float,
) -> torch.Tensor:
    if dice_weight == 0:
        return pixel_term
    dice = _dice(torch.sigmoid(logits), onehot, per_image, smooth)
    return (1.0 - dice_weight) * pixel_term + dice_weight * dice


def bce(
    logits: torch.Tensor, target: torch.Tensor, *, dice_weight: float = 0.0, per_image_dice: bool = False,
    smooth: float = 1.0,
) -> torch.Tensor:
    """Binary cross-entropy of every (pixel, class) pair (equation 6), mean over the batch; plus Dice."""
    logits, onehot = _prepare(logits, target)
    pixel_term = F.binary_cross_entropy_with_logits(logits, onehot)
    return _with_dice(pixel_term, logits, onehot, dice_weight, per_image_dice, smooth)


def bce_dice(
    logits: torch.Tensor, target: torch.Tensor, *, dice_weight: float = 0.5, per_image_dice: bool = False,
    smooth: float = 1.0,
) -> torch.Tensor:
    """The DLI paper's loss: 0.5 * BCE + 0.5 * Dice (`bce` with dice_weight 0.5 by default)."""
    return bce(logits, target, dice_weight=dice_weight, per_image_dice=per_image_dice, smooth=smooth)


def focal(
    logits: torch.Tensor, target: torch.Tensor, *, gamma: float = 2.0, alpha: float | None = None,
    dice_weight: float = 0.0, per_image_dice: bool = False, smooth: float = 1.0,
) -> torch.Tensor:
    """Focal loss per (pixel, class) pair (Lin et al. 2017): -alpha_t (1 - p_t)^gamma log p_t.

    p_t is the sigmoid probability of the true value of that channel; alpha weighs the positives
    (negatives get 1 - alpha), None weighs both by 1. gamma = 0 and alpha = None give `bce`.
    """
    logits, onehot = _prepare(logits, target)
    log_p_t = -F.binary_cross_entropy_with_logits(logits, onehot, reduction="none")
    loss = -((1.0 - log_p_t.exp()) ** gamma) * log_p_t
    if alpha is not None:
        loss = loss * (alpha * onehot + (1.0 - alpha) * (1.0 - onehot))
    return _with_dice(loss.mean(), logits, onehot, dice_weight, per_image_dice, smooth)


def _counts(pixel_counts: Sequence[float] | None, target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(C + 1,) float64 pixel counts, background first: the given ones or the batch's."""
    if pixel_counts is None:
        return torch.bincount(target.reshape(-1), minlength=n_classes + 1).to(torch.float64).cpu()
    counts = torch.as_tensor(pixel_counts, dtype=torch.float64).reshape(-1)
    if counts.numel() != n_classes + 1:
        raise ConfigError(
            f"pixel_counts has {counts.numel()} entries but the network has {n_classes} defect classes. "
            f"Fix: give {n_classes + 1} counts, the background first (the segmenter computes them)."
        )
    return counts


def inverse_frequency_weights(pixel_counts: torch.Tensor) -> torch.Tensor:
    """w_k = 1 / (K f_k), f_k = n_k / sum n (counts clamped to >= 1): the mean weight per pixel is 1."""
    counts = torch.as_tensor(pixel_counts, dtype=torch.float64).clamp_min(1.0)
    return counts.sum() / (len(counts) * counts)


def balanced_weights(pixel_counts: torch.Tensor, beta: float) -> torch.Tensor:
    """Class-balanced weights (Cui et al. 2019): w_k = (1 - beta) / (1 - beta^n_k), scaled to sum to K.

    1 / w_k is the effective number of samples of class k, which saturates at 1 / (1 - beta): with
    pixel counts in the millions, a beta far from 1 gives every class nearly the same weight.
    """
    counts = torch.as_tensor(pixel_counts, dtype=torch.float64).clamp_min(1.0)
    weights = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), counts))
    return weights * len(weights) / weights.sum()


def _class_weighted_bce(logits: torch.Tensor, target: torch.Tensor, onehot: torch.Tensor, weights: torch.Tensor):
    per_pixel = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none").mean(dim=1)
    w = weights.to(device=logits.device, dtype=logits.dtype)[target]
    return (w * per_pixel).sum() / w.sum()


def weighted_ce(
    logits: torch.Tensor, target: torch.Tensor, *, pixel_counts: Sequence[float] | None = None,
    dice_weight: float = 0.0, per_image_dice: bool = False, smooth: float = 1.0,
) -> torch.Tensor:
    """Weighted per-class BCE (the paper's WCE): pixels weighted by `inverse_frequency_weights` of the
    training masks' class pixel counts (module docstring)."""
    logits, onehot = _prepare(logits, target)
    weights = inverse_frequency_weights(_counts(pixel_counts, target, logits.shape[1]))
    return _with_dice(_class_weighted_bce(logits, target, onehot, weights), logits, onehot, dice_weight,
                      per_image_dice, smooth)


def balanced(
    logits: torch.Tensor, target: torch.Tensor, *, beta: float = 0.9999, pixel_counts: Sequence[float] | None = None,
    dice_weight: float = 0.0, per_image_dice: bool = False, smooth: float = 1.0,
) -> torch.Tensor:
    """Class-balanced BCE (Cui et al. 2019, the paper's "Balanced"): pixels weighted by
    `balanced_weights` of the training masks' class pixel counts (module docstring)."""
    logits, onehot = _prepare(logits, target)
    weights = balanced_weights(_counts(pixel_counts, target, logits.shape[1]), beta)
    return _with_dice(_class_weighted_bce(logits, target, onehot, weights), logits, onehot, dice_weight,
                      per_image_dice, smooth)


SEGMENTATION_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "bce_dice": bce_dice,
    "bce": bce,
    "focal": focal,
    "balanced": balanced,
    "weighted_ce": weighted_ce,
}

# What each parameter accepts: (check, what to write in the error).
_NUMBER = (int, float)
_PARAMETER_CHECKS: dict[str, tuple[Callable[[object], bool], str]] = {
    "dice_weight": (lambda v: _real(v) and 0.0 <= v <= 1.0, "a number in [0, 1], e.g. 0.5"),
    "per_image_dice": (lambda v: isinstance(v, bool), "true or false"),
    "smooth": (lambda v: _real(v) and v > 0, "a positive number, e.g. 1.0"),
    "gamma": (lambda v: _real(v) and v >= 0, "a number >= 0, e.g. 2.0"),
    "alpha": (lambda v: v is None or (_real(v) and 0.0 <= v <= 1.0), "null or a number in [0, 1], e.g. 0.25"),
    "beta": (lambda v: _real(v) and 0.0 < v < 1.0, "a number in (0, 1), e.g. 0.9999"),
    "pixel_counts": (lambda v: v is None or _counts_like(v), "class pixel counts >= 0, background first"),
}


def _real(value: object) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool) and math.isfinite(value)


def _counts_like(value: object) -> bool:
    try:
        counts = torch.as_tensor(value, dtype=torch.float64).reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        return False
    return counts.numel() >= 2 and bool(torch.isfinite(counts).all()) and bool((counts >= 0).all())


def loss_parameters(name: str) -> list[str]:
    """The keyword parameters (beyond logits and target) that loss `name` accepts."""
    return list(inspect.signature(lookup(SEGMENTATION_LOSSES, name, "segmentation loss")).parameters)[2:]


def segmentation_loss(name: str, **params) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss `name` of SEGMENTATION_LOSSES with `params` bound: ``loss(logits, target) -> scalar``.

    Raises ConfigError for an unknown name, a parameter the loss does not take, or a bad value.
    """
    function = lookup(SEGMENTATION_LOSSES, name, "segmentation loss")
    accepted = loss_parameters(name)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(
            f"loss {name!r}: unknown parameter(s) {', '.join(unknown)}. Fix: use only {', '.join(accepted)}."
        )
    for key, value in params.items():
        check, expected = _PARAMETER_CHECKS[key]
        if not check(value):
            raise ConfigError(f"loss {name!r}: parameter {key}={value!r} must be {expected}.")
    return functools.partial(function, **params)
