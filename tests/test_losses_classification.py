"""Classification losses on hand-computed values, and the properties that tie them to cross-entropy."""

import math

import pytest
import torch

from defectmine.errors import ConfigError
from defectmine.models.losses import (
    CLASSIFICATION_LOSSES,
    abnormality_capturing_loss,
    classification_loss,
    pair_distance,
)

# Two images: an anomalous one with logits (0, 1) and a normal one with logits (2, 0.5).
LOGITS = torch.tensor([[0.0, 1.0], [2.0, 0.5]], dtype=torch.float64)
LABELS = torch.tensor([1, 0])


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def loss(name, **params):
    return classification_loss(name, **params)(LOGITS, LABELS).item()


# per-sample cross-entropy: log(1 + exp(wrong - right))
CE_ANOMALOUS = math.log(1 + math.exp(-1.0))
CE_NORMAL = math.log(1 + math.exp(-1.5))


def test_cross_entropy_hand_value():
    assert loss("ce") == pytest.approx((CE_ANOMALOUS + CE_NORMAL) / 2)


def test_weighted_cross_entropy_given_weights_is_a_weighted_mean():
    assert loss("weighted_ce", weights=[1.0, 3.0]) == pytest.approx((3 * CE_ANOMALOUS + CE_NORMAL) / 4)


def test_weighted_cross_entropy_from_priors_uses_inverse_frequency():
    w_normal, w_anomalous = 1 / (2 * 0.75), 1 / (2 * 0.25)
    expected = (w_anomalous * CE_ANOMALOUS + w_normal * CE_NORMAL) / (w_anomalous + w_normal)
    assert loss("weighted_ce", priors=[0.75, 0.25]) == pytest.approx(expected)


def test_focal_loss_hand_value():
    p1, p2 = sigmoid(1.0), sigmoid(1.5)  # probabilities of the true class
    expected = (-(1 - p1) ** 2 * math.log(p1) - (1 - p2) ** 2 * math.log(p2)) / 2
    assert loss("focal", gamma=2.0) == pytest.approx(expected)
    with_alpha = (-0.25 * (1 - p1) ** 2 * math.log(p1) - 0.75 * (1 - p2) ** 2 * math.log(p2)) / 2
    assert loss("focal", gamma=2.0, alpha=0.25) == pytest.approx(with_alpha)


def test_asymmetric_loss_hand_value():
    p_anomalous = sigmoid(1.0)
    p_normal_image = sigmoid(0.5 - 2.0)  # p(anomalous) of the normal image
    p_m = p_normal_image - 0.1
    expected = (-(1 - p_anomalous) * math.log(p_anomalous) - p_m**2 * math.log(1 - p_m)) / 2
    assert loss("asymmetric", gamma_pos=1.0, gamma_neg=2.0, clip=0.1) == pytest.approx(expected)


def test_asymmetric_loss_clip_zeroes_easy_normals():
    easy_normal = torch.tensor([[5.0, 0.0]])  # p(anomalous) ~ 0.007 < clip
    assert classification_loss("asymmetric", clip=0.05)(easy_normal, torch.tensor([0])).item() == 0.0


def test_logit_adjusted_loss_hand_value():
    anomalous = math.log(1 + math.exp(-1.0 + math.log(0.8 / 0.2)))
    normal = math.log(1 + math.exp(-1.5 + math.log(0.2 / 0.8)))
    assert loss("lal", tau=1.0, priors=[0.8, 0.2]) == pytest.approx((anomalous + normal) / 2)


def test_encouraging_loss_is_minus_the_margin_in_the_binary_case():
    # -log p + log(1 - p) = log((1 - p) / p) = f[1-y] - f[y]
    assert loss("el") == pytest.approx((-1.0 - 1.5) / 2)


def test_encouraging_loss_conservative_bonus_is_linear_after_log_end():
    p1, p2 = sigmoid(1.0), sigmoid(1.5)  # 0.73 < 0.75 < 0.82
    first = -math.log(p1) + math.log(1 - p1)
    second = -math.log(p2) + (p2 - 0.75) / (0.75 - 1) + math.log(1 - 0.75)
    assert loss("el", log_end=0.75) == pytest.approx((first + second) / 2)


def test_logit_inducing_loss_hand_value_equation_4():
    # y = 1: log(0 + (p0/p1) exp(f0 - f1)); y = 0: log(1 + (p1/p0) exp(f1 - f0))
    anomalous = math.log((0.8 / 0.2) * math.exp(0.0 - 1.0))
    normal = math.log(1 + (0.2 / 0.8) * math.exp(0.5 - 2.0))
    assert loss("lil", priors=[0.8, 0.2]) == pytest.approx((anomalous + normal) / 2)


def test_logit_inducing_loss_keeps_its_gradient_on_well_classified_anomalies():
    for margin in (1.0, 10.0, 50.0):
        logits = torch.tensor([[0.0, margin]], requires_grad=True)
        classification_loss("lil", priors=[0.9, 0.1])(logits, torch.tensor([1])).backward()
        assert logits.grad[0, 1].item() == pytest.approx(-1.0)  # cross-entropy's would vanish


def test_logit_inducing_loss_margin_bounds_the_anomalous_term_below():
    # as printed, an anomaly with a huge logit gap pays an unbounded negative loss (training drifts to
    # about -130 and heatmaps flatten); with margin m it pays at least -m and stops pushing
    logits = torch.tensor([[0.0, 100.0]], requires_grad=True)
    printed = classification_loss("lil", priors=[0.5, 0.5])(logits, torch.tensor([1]))
    assert printed.item() == pytest.approx(-100.0)
    bounded = classification_loss("lil", priors=[0.5, 0.5], margin=5.0)(logits, torch.tensor([1]))
    bounded.backward()
    assert bounded.item() == pytest.approx(-5.0) and logits.grad.abs().max().item() == 0.0
    inside = torch.tensor([[0.0, 2.0]], requires_grad=True)
    classification_loss("lil", priors=[0.5, 0.5], margin=5.0)(inside, torch.tensor([1])).backward()
    assert inside.grad[0, 1].item() == pytest.approx(-1.0)  # below the margin: the printed gradient


def test_logit_inducing_loss_on_normals_is_the_logit_adjusted_loss():
    normals = torch.zeros(3, dtype=torch.long)
    logits = torch.tensor([[1.0, -1.0], [0.0, 2.0], [3.0, 3.0]])
    lil = classification_loss("lil", priors=[0.7, 0.3])(logits, normals)
    lal = classification_loss("lal", priors=[0.7, 0.3])(logits, normals)
    assert torch.isclose(lil, lal)


def test_priors_default_to_the_batch_frequencies():
    assert loss("lil") == pytest.approx(loss("lil", priors=[0.5, 0.5]))
    only_normals = classification_loss("lal")(LOGITS, torch.tensor([0, 0]))
    assert torch.isfinite(only_normals)  # an absent class counts as one, not as log(0)


@pytest.mark.parametrize(
    "name, params",
    [("focal", {"gamma": 0.0}), ("lal", {"tau": 0.0}), ("weighted_ce", {"weights": [2.0, 2.0]}),
     ("asymmetric", {"gamma_pos": 0.0, "gamma_neg": 0.0, "clip": 0.0})],
)
def test_losses_reduce_to_cross_entropy(name, params):
    torch.manual_seed(0)
    logits, labels = torch.randn(16, 2, dtype=torch.float64), torch.randint(0, 2, (16,))
    expected = classification_loss("ce")(logits, labels)
    assert torch.isclose(classification_loss(name, **params)(logits, labels), expected)


@pytest.mark.parametrize("name", sorted(CLASSIFICATION_LOSSES))
def test_a_single_logit_is_the_anomalous_margin(name):
    margins = torch.tensor([0.7, -1.2, 2.5])
    labels = torch.tensor([1, 0, 1])
    two = torch.stack([torch.zeros(3), margins], dim=1)
    fn = classification_loss(name)
    assert torch.isclose(fn(margins, labels), fn(two, labels))


def test_unknown_loss_lists_the_known_ones():
    known = "ce, weighted_ce, focal, asymmetric, lal, el, lil"
    with pytest.raises(ConfigError, match=f"unknown classification loss; known: {known}"):
        classification_loss("hinge")


def test_unknown_loss_parameter_is_named():
    with pytest.raises(ConfigError, match="'focal'.*gama.*gamma, alpha"):
        classification_loss("focal", gama=2)


def test_bad_priors_are_a_config_error():
    with pytest.raises(ConfigError, match="priors"):
        classification_loss("lil", priors=[1.0, 0.0])(LOGITS, LABELS)


def test_pair_distance_hand_value_and_scale_invariance():
    f_t, f_s = torch.tensor([[3.0, 4.0]]), torch.tensor([[4.0, 3.0]])
    # unit vectors (0.6, 0.8) and (0.8, 0.6): 1/2 * (0.2^2 + 0.2^2) = 0.04 = 1 - cos
    assert pair_distance(f_t, f_s).item() == pytest.approx(0.04)
    assert pair_distance(10 * f_t, 0.1 * f_s).item() == pytest.approx(0.04)
    assert pair_distance(f_t, f_t).item() == pytest.approx(0.0)


def test_abnormality_capturing_loss_hand_values():
    distance, labels = torch.tensor([0.04, 0.5]), torch.tensor([0, 1])
    assert abnormality_capturing_loss(distance, labels).item() == pytest.approx((0.04 + (1 - 0.5)) / 2)
    printed = abnormality_capturing_loss(distance, labels, "as_printed").item()
    assert printed == pytest.approx(((1 - 0.04) + 0.5) / 2)
    with pytest.raises(ConfigError, match="acl='typo'.*intent, as_printed"):
        abnormality_capturing_loss(distance, labels, "typo")
