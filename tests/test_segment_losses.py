"""Segmentation losses on hand-computed values, and the properties that tie them together."""

import math

import pytest
import torch

from defectmine.errors import ConfigError, DataError
from defectmine.segment.losses import (
    SEGMENTATION_LOSSES,
    balanced_weights,
    dice_loss,
    inverse_frequency_weights,
    loss_parameters,
    one_hot,
    segmentation_loss,
)

# One image of 1x2 pixels, C = 2 defect classes: pixel 0 is background, pixel 1 is class 2.
# Channel 0 (class 1) has logits (0, 1), channel 1 (class 2) has logits (-1, 2).
LOGITS = torch.tensor([[[[0.0, 1.0]], [[-1.0, 2.0]]]], dtype=torch.float64)
TARGET = torch.tensor([[[0, 2]]])


def s(x):
    return 1 / (1 + math.exp(-x))


def softplus(x):
    return math.log(1 + math.exp(x))


# BCE of each (channel, pixel): targets are ch0 (0, 0), ch1 (0, 1)
BCE_TERMS = [softplus(0.0), softplus(1.0), softplus(-1.0), softplus(-2.0)]
BCE = sum(BCE_TERMS) / 4
PROBABILITIES = [s(0.0), s(1.0), s(-1.0), s(2.0)]
DICE_POOLED = 1 - (2 * s(2.0) + 1) / (sum(PROBABILITIES) + 1 + 1)
# per-pixel BCE averaged over the two channels
PIXEL_BCE = [(softplus(0.0) + softplus(-1.0)) / 2, (softplus(1.0) + softplus(-2.0)) / 2]


def loss(name, **params):
    return segmentation_loss(name, **params)(LOGITS, TARGET).item()


def test_one_hot_switches_one_channel_per_defect_pixel():
    onehot = one_hot(torch.tensor([[[0, 1, 2]]]), 2)
    assert onehot[0, :, 0].tolist() == [[0, 1, 0], [0, 0, 1]]


def test_bce_hand_value():
    assert loss("bce") == pytest.approx(BCE)


def test_dice_pooled_hand_value():
    assert dice_loss(LOGITS, TARGET).item() == pytest.approx(DICE_POOLED)


def test_dice_per_image_and_class_hand_value():
    class_1 = 1 - 1 / (s(0.0) + s(1.0) + 1)  # empty pair: (0 + smooth) / (sum p + smooth)
    class_2 = 1 - (2 * s(2.0) + 1) / (s(-1.0) + s(2.0) + 1 + 1)
    assert dice_loss(LOGITS, TARGET, per_image=True).item() == pytest.approx((class_1 + class_2) / 2)


def test_bce_dice_is_the_papers_half_and_half():
    assert loss("bce_dice") == pytest.approx(0.5 * BCE + 0.5 * DICE_POOLED)
    assert loss("bce", dice_weight=0.5) == pytest.approx(loss("bce_dice"))
    assert loss("bce_dice", dice_weight=1.0) == pytest.approx(DICE_POOLED)


def test_focal_hand_value_and_gamma_zero_is_bce():
    p_true = [1 - s(0.0), 1 - s(1.0), 1 - s(-1.0), s(2.0)]
    expected = sum(-((1 - p) ** 2) * math.log(p) for p in p_true) / 4
    assert loss("focal", gamma=2.0) == pytest.approx(expected)
    assert loss("focal", gamma=0.0) == pytest.approx(BCE)
    alpha = [0.75, 0.75, 0.75, 0.25]  # alpha = 0.25 on the one positive, 0.75 on negatives
    with_alpha = sum(-a * (1 - p) ** 2 * math.log(p) for a, p in zip(alpha, p_true)) / 4
    assert loss("focal", gamma=2.0, alpha=0.25) == pytest.approx(with_alpha)


def test_weighted_ce_uses_inverse_pixel_frequencies():
    counts = [6, 1, 3]  # background, class 1, class 2
    w = [10 / (3 * 6), 10 / (3 * 1), 10 / (3 * 3)]
    assert inverse_frequency_weights(torch.tensor(counts)).tolist() == pytest.approx(w)
    expected = (w[0] * PIXEL_BCE[0] + w[2] * PIXEL_BCE[1]) / (w[0] + w[2])
    assert loss("weighted_ce", pixel_counts=counts) == pytest.approx(expected)


def test_balanced_uses_the_effective_number_of_samples():
    counts, beta = [6, 1, 3], 0.5
    raw = [(1 - beta) / (1 - beta**n) for n in counts]
    assert balanced_weights(torch.tensor(counts), beta).tolist() == pytest.approx([3 * r / sum(raw) for r in raw])
    expected = (raw[0] * PIXEL_BCE[0] + raw[2] * PIXEL_BCE[1]) / (raw[0] + raw[2])
    assert loss("balanced", beta=beta, pixel_counts=counts) == pytest.approx(expected)


def test_class_weighted_losses_with_equal_counts_are_bce():
    # batch counts (1, 0, 1) are clamped to 1: every class weighs the same
    assert loss("weighted_ce") == pytest.approx(BCE)
    assert loss("balanced") == pytest.approx(BCE)
    assert loss("weighted_ce", pixel_counts=[5, 5, 5], dice_weight=0.5) == pytest.approx(loss("bce_dice"))


def test_per_image_dice_keeps_a_tiny_missed_defect_visible():
    # image 0: a large defect, predicted exactly; image 1: one defect pixel, missed
    target = torch.zeros(2, 8, 8, dtype=torch.int64)
    target[0, :4] = 1
    target[1, 0, 0] = 1
    logits = torch.where(target[:, None] == 1, 20.0, -20.0)
    logits[1, 0, 0, 0] = -20.0
    pooled = dice_loss(logits, target, smooth=1e-6).item()
    per_image = dice_loss(logits, target, per_image=True, smooth=1e-6).item()
    assert pooled < 0.02 and per_image > 0.45


def test_every_loss_takes_dice_options_and_is_finite_on_random_inputs():
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.randint(0, 4, (2, 8, 8))
    for name in SEGMENTATION_LOSSES:
        assert {"dice_weight", "per_image_dice", "smooth"} <= set(loss_parameters(name))
        value = segmentation_loss(name, per_image_dice=True)(logits, target)
        value.backward()
        assert torch.isfinite(value) and value.item() > 0


def test_unknown_loss_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown segmentation loss 'nope'; known: bce_dice"):
        segmentation_loss("nope")


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("focal", {"beta": 0.9}, "unknown parameter.*beta.*Fix: use only gamma"),
        ("focal", {"gamma": -1}, "gamma=-1 must be a number >= 0"),
        ("balanced", {"beta": 1.0}, r"beta=1.0 must be a number in \(0, 1\)"),
        ("bce", {"dice_weight": 2}, r"dice_weight=2 must be a number in \[0, 1\]"),
        ("bce", {"per_image_dice": "yes"}, "per_image_dice='yes' must be true or false"),
        ("weighted_ce", {"pixel_counts": [3, -1]}, "pixel_counts=.* must be class pixel counts"),
    ],
)
def test_bad_parameters_are_named(name, params, message):
    with pytest.raises(ConfigError, match=message):
        segmentation_loss(name, **params)


def test_pixel_counts_of_another_class_count_are_refused():
    with pytest.raises(ConfigError, match="pixel_counts has 2 entries but the network has 2 defect classes"):
        loss("weighted_ce", pixel_counts=[10, 1])


def test_targets_outside_the_classes_are_refused():
    with pytest.raises(DataError, match="class indices 0..3 but the network has 2 defect classes"):
        segmentation_loss("bce")(LOGITS, torch.tensor([[[0, 3]]]))
    with pytest.raises(DataError, match="integer class indices"):
        segmentation_loss("bce")(LOGITS, TARGET.float())
