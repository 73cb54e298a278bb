"""Losses as pure functions, each tested on hand-computed values."""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from defectmine.errors import ConfigError


def pseudo_huber(a: torch.Tensor) -> torch.Tensor:
    """H(a) = sqrt(a^2 + 1) - 1, element-wise (deeper-FCDD paper, equation 2).

    Computed as a^2 / (sqrt(a^2 + 1) + 1), the same function: the difference form cancels in float32
    where a is small (normal pixels, trained towards 0), which left near-normal scores with about 0.1 %
    rounding noise, enough to break an ensemble's export parity once standardised. Beyond |a| = 1e6,
    H is |a| - 1 to float32 precision, and a^2 would overflow (to inf / inf) past about 1.8e19: a
    diverged network still scores inf, not NaN."""
    magnitude = a.abs()
    squared = a * a
    return torch.where(magnitude > 1e6, magnitude - 1.0, squared / (torch.sqrt(squared + 1.0) + 1.0))


def fcdd_loss(heat: torch.Tensor, labels: torch.Tensor, eps: float = 1e-9, *,
              anomalous_scores: torch.Tensor | None = None, normal_scores: torch.Tensor | None = None) -> torch.Tensor:
    """Deeper-FCDD loss (equation 3) on pseudo-Huber maps `heat` (N, u, v) and labels (N,) in {0, 1}.

    Normal images pay s, anomalous ones -log(1 - exp(-s)); s is the mean of H over the map, or, where
    given, `normal_scores` / `anomalous_scores` (N,) for that class (a tiled FCDD's highest window
    mean: a small defect fills one window, not the whole map). With no anomalous images in the batch
    it is the one-class loss.
    """
    mean_heat = heat.flatten(1).mean(dim=1)
    labels = labels.to(mean_heat.dtype)
    s = mean_heat if anomalous_scores is None else anomalous_scores
    # -log(1 - exp(-s)) == -log(-expm1(-s)); the clamp keeps s = 0 from giving inf.
    anomalous_term = -torch.log(-torch.expm1(-s.clamp_min(eps)))
    normal_term = mean_heat if normal_scores is None else normal_scores
    return ((1 - labels) * normal_term + labels * anomalous_term).mean()


# -- image classification losses ----------------------------------------------------------------
# Binary normal (0) / anomalous (1) classification under heavy imbalance. Every loss takes logits
# (N, 2) - or (N,), read as the anomalous-minus-normal margin - and labels (N,) in {0, 1}, and
# returns the batch mean. `priors` are the class frequencies (p_normal, p_anomalous) of the samples
# the loss sees; left out, they are the frequencies of the batch itself (each count at least 1, so
# a batch without anomalies does not put log(0) into the margins).


def _two_logits(logits: torch.Tensor) -> torch.Tensor:
    if logits.ndim == 1:
        return torch.stack([torch.zeros_like(logits), logits], dim=1)
    if logits.ndim != 2 or logits.shape[1] != 2:
        raise ConfigError(f"classification losses take logits of shape (N, 2) or (N,), got {tuple(logits.shape)}.")
    return logits


def _labels(labels: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(labels, device=logits.device).long()


def _priors(priors, labels: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(2,) class frequencies: the given ones, or the batch's."""
    if priors is None:
        counts = torch.bincount(labels, minlength=2)[:2].clamp_min(1).to(like.dtype)
        return counts / counts.sum()
    priors = torch.as_tensor(priors, dtype=like.dtype, device=like.device)
    if priors.shape != (2,) or not bool((priors > 0).all()):
        raise ConfigError(f"priors={priors.tolist()}: give two positive class frequencies (p_normal, p_anomalous).")
    return priors


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CE = -log p_y with p = softmax(logits) (equation 5 of the LIAC paper in its binary form)."""
    logits = _two_logits(logits)
    return F.cross_entropy(logits, _labels(labels, logits))


def weighted_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, weights=None, priors=None
) -> torch.Tensor:
    """Weighted CE (WCE, Xie and Manski; the LIAC paper's baseline [17]).

    weights: (w_normal, w_anomalous); left out, inverse class frequency w_c = 1 / (2 p_c) from
    `priors` (or the batch). The mean is weighted, sum_i w_{y_i} CE_i / sum_i w_{y_i}, as in
    torch's ``cross_entropy(weight=...)``, so with inverse-frequency weights both classes count equally.
    """
    logits = _two_logits(logits)
    labels = _labels(labels, logits)
    if weights is None:
        weights = 1.0 / (2.0 * _priors(priors, labels, logits))
    else:
        weights = torch.as_tensor(weights, dtype=logits.dtype, device=logits.device)
        if weights.shape != (2,) or not bool((weights >= 0).all()) or not bool(weights.sum() > 0):
            raise ConfigError(f"weights={weights.tolist()}: give two non-negative class weights (normal, anomalous).")
    return F.cross_entropy(logits, labels, weight=weights)


def focal_loss(
    logits: torch.Tensor, labels: torch.Tensor, gamma: float = 2.0, alpha: float | None = None
) -> torch.Tensor:
    """Focal loss (Lin et al., ICCV 2017): -alpha_y (1 - p_y)^gamma log p_y.

    alpha: weight of the anomalous class (normal images get 1 - alpha); None weighs both by 1.
    gamma = 0 and alpha = None give cross-entropy.
    """
    logits = _two_logits(logits)
    labels = _labels(labels, logits)
    log_p = F.log_softmax(logits, dim=1).gather(1, labels[:, None]).squeeze(1)
    loss = -((1.0 - log_p.exp()) ** gamma) * log_p
    if alpha is not None:
        loss = loss * torch.where(labels == 1, alpha, 1.0 - alpha)
    return loss.mean()


def asymmetric_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    gamma_pos: float = 0.0,
    gamma_neg: float = 4.0,
    clip: float = 0.05,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Asymmetric loss of Ridnik et al. (ASL, ICCV 2021), binary form with "anomalous" as positive.

    With p = p(anomalous) and p_m = max(p - clip, 0):
    anomalous images pay -(1 - p)^gamma_pos log p, normal ones -p_m^gamma_neg log(1 - p_m).
    gamma_neg > gamma_pos and the clip discount easy normals, so the rare anomalies carry more of
    the gradient. The LIAC paper's "AsyL" baseline [37] (Lin et al., Appl. Sci. 2020) is a
    focal-loss variant with the same aim whose formula that paper does not restate; this is
    Ridnik's published definition. gamma_pos = gamma_neg = 0 and clip = 0 give cross-entropy.
    """
    logits = _two_logits(logits)
    labels = _labels(labels, logits)
    p = torch.softmax(logits, dim=1)[:, 1]
    p_m = (p - clip).clamp_min(0.0) if clip > 0 else p
    positive = -((1.0 - p) ** gamma_pos) * torch.log(p.clamp_min(eps))
    negative = -(p_m**gamma_neg) * torch.log((1.0 - p_m).clamp_min(eps))
    return torch.where(labels == 1, positive, negative).mean()


def logit_adjusted_loss(logits: torch.Tensor, labels: torch.Tensor, tau: float = 1.0, priors=None) -> torch.Tensor:
    """Logit-adjusted loss (LAL, Menon et al., ICLR 2021): CE on logits + tau * log(priors).

    Per sample, log(1 + exp(f[1-y] - f[y] + tau log(p_{1-y} / p_y))): the rare class must win by a
    margin of tau log(p_0 / p_1). tau = 0 gives cross-entropy.
    """
    logits = _two_logits(logits)
    labels = _labels(labels, logits)
    adjusted = logits + tau * torch.log(_priors(priors, labels, logits))
    return F.cross_entropy(adjusted, labels)


def encouraging_loss(
    logits: torch.Tensor, labels: torch.Tensor, log_end: float = 1.0, eps: float = 1e-5
) -> torch.Tensor:
    """Encouraging loss (EL, Zhao et al., AAAI 2022): CE plus the bonus log(1 - p_y).

    EL = -log p_y + log(max(1 - p_y, eps)). The bonus keeps rewarding well-classified images (in
    the binary case the sum is the plain margin f[1-y] - f[y] until 1 - p_y reaches eps). The
    authors' "conservative" bonus replaces log(1 - p) for p > log_end by its tangent line at log_end
    (their code suggests 0.75); log_end = 1 (default) is the plain bonus.
    """
    logits = _two_logits(logits)
    labels = _labels(labels, logits)
    log_p = F.log_softmax(logits, dim=1).gather(1, labels[:, None]).squeeze(1)
    p = log_p.exp()
    bonus = torch.log((1.0 - p).clamp_min(eps))
    if log_end < 1.0:
        tangent = (p - log_end) / (log_end - 1.0) + math.log(1.0 - log_end)
        bonus = torch.where(p > log_end, tangent, bonus)
    return (-log_p + bonus).mean()


def logit_inducing_loss(logits: torch.Tensor, labels: torch.Tensor, priors=None,
                        margin: float | None = None) -> torch.Tensor:
    """Logit inducing loss (LIL), equation 4 of the LIAC paper (Wan et al., IEEE TIM 2022):

        LIL(x, y) = log(1 - y + (p_{1-y} / p_y) exp(f[1-y] - f[y])).

    Normal images (y = 0) pay log(1 + exp(f_1 - f_0 + log(p_1 / p_0))), the logit-adjusted loss;
    anomalous ones (y = 1) pay f_0 - f_1 + log(p_0 / p_1), a linear margin that, like the
    encouraging loss, keeps its gradient on anomalies that are already well classified
    (equations 6-8). As printed it is unbounded below: a few labelled anomalies drawn into every
    batch can be pushed to ever larger logits, the loss falls without limit (about -130 was seen on
    a crack set) and the class-activation maps flatten. `margin` (None: as printed) stops paying an
    anomaly once its adjusted logit gap exceeds `margin`, which bounds the loss below by -margin.
    """
    logits = _two_logits(logits)
    labels = _labels(labels, logits)
    log_priors = torch.log(_priors(priors, labels, logits))
    # z = f[1-y] - f[y] + log(p_{1-y} / p_y): the sign flips with the label.
    sign = 1.0 - 2.0 * labels.to(logits.dtype)
    z = sign * ((logits[:, 1] - logits[:, 0]) + (log_priors[1] - log_priors[0]))
    anomalous = z if margin is None else z.clamp(min=-float(margin))
    return torch.where(labels == 1, anomalous, F.softplus(z)).mean()


CLASSIFICATION_LOSSES = {
    "ce": cross_entropy,
    "weighted_ce": weighted_cross_entropy,
    "focal": focal_loss,
    "asymmetric": asymmetric_loss,
    "lal": logit_adjusted_loss,
    "el": encouraging_loss,
    "lil": logit_inducing_loss,
}


def loss_parameters(name: str) -> list[str]:
    """The keyword parameters (beyond logits and labels) that loss `name` accepts."""
    import inspect

    return list(inspect.signature(_loss_function(name)).parameters)[2:]


def _loss_function(name: str):
    try:
        return CLASSIFICATION_LOSSES[name]
    except KeyError:
        raise ConfigError(
            f"loss={name!r}: unknown classification loss; known: {', '.join(CLASSIFICATION_LOSSES)}."
        ) from None


def classification_loss(name: str, **params):
    """The loss `name` of CLASSIFICATION_LOSSES with `params` bound: ``loss(logits, labels) -> scalar``.

    Raises ConfigError for an unknown name or a parameter the loss does not take.
    """
    function = _loss_function(name)
    unknown = sorted(set(params) - set(loss_parameters(name)))
    if unknown:
        known = ", ".join(loss_parameters(name)) or "none"
        raise ConfigError(f"loss {name!r}: unknown parameter(s) {', '.join(unknown)}; it takes: {known}.")
    return functools.partial(function, **params)


# -- LIAC abnormality capturing -----------------------------------------------------------------

ACL_VARIANTS = ("intent", "as_printed")


def pair_distance(f_t: torch.Tensor, f_s: torch.Tensor) -> torch.Tensor:
    """D(x) of the LIAC paper's equation 10 for feature pairs (N, C): 1/2 |u - v|^2, u and v unit vectors.

    Printed, eq. 10 divides by the *squared* norm, which would make D depend on the feature scale
    (shrinking features inflates D without bound, so eq. 11 would have no minimum); read as the
    L2 norm, D = 1 - cos(f_T, f_S) lies in [0, 1] for non-negative (post-ReLU, pooled) features,
    which is what 1 - D in eq. 11 needs.
    """
    u = F.normalize(f_t.flatten(1), dim=1)
    v = F.normalize(f_s.flatten(1), dim=1)
    return 0.5 * (u - v).pow(2).sum(dim=1)


def abnormality_capturing_loss(distance: torch.Tensor, labels: torch.Tensor, variant: str = "intent") -> torch.Tensor:
    """Abnormality capturing loss (ACL), equation 11 of the LIAC paper, on distances D (N,).

    variant "intent" (default): (1 - y) D + y (1 - D) - normal pairs pulled together, anomalous pairs
    pushed apart, as the paper's text and Fig. 3 describe.
    variant "as_printed": y D + (1 - y)(1 - D), equation 11 exactly as printed, which does the
    opposite (it rewards a large D for normal images); kept for the ablation.
    """
    if variant not in ACL_VARIANTS:
        raise ConfigError(f"acl={variant!r}: use one of {', '.join(ACL_VARIANTS)}.")
    y = torch.as_tensor(labels, device=distance.device).to(distance.dtype)
    anomalous_pays = distance if variant == "as_printed" else 1.0 - distance
    normal_pays = 1.0 - distance if variant == "as_printed" else distance
    return (y * anomalous_pays + (1.0 - y) * normal_pays).mean()
