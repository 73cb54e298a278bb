import math

import torch

from defectmine.models.losses import fcdd_loss, pseudo_huber


def test_pseudo_huber_hand_values():
    a = torch.tensor([0.0, 1.0, -2.0, 3.0])
    expected = torch.tensor([0.0, math.sqrt(2) - 1, math.sqrt(5) - 1, math.sqrt(10) - 1])
    assert torch.allclose(pseudo_huber(a), expected)


def test_fcdd_loss_normal_only_is_mean_heat():
    heat = torch.tensor([[[1.0, 3.0]], [[0.0, 2.0]]])  # (2, 1, 2): means 2 and 1
    assert torch.isclose(fcdd_loss(heat, torch.tensor([0, 0])), torch.tensor(1.5))


def test_fcdd_loss_mixed_hand_value():
    heat = torch.tensor([[[2.0, 2.0]], [[0.5, 1.5]]])  # normal mean 2, anomalous mean 1
    expected = (2.0 + -math.log(1 - math.exp(-1.0))) / 2
    assert math.isclose(fcdd_loss(heat, torch.tensor([0, 1])).item(), expected, rel_tol=1e-6)


def test_fcdd_loss_anomalous_with_zero_heat_is_finite_and_large():
    loss = fcdd_loss(torch.zeros(1, 2, 2), torch.tensor([1]))
    assert torch.isfinite(loss) and loss.item() > 10


def test_fcdd_loss_rewards_high_heat_on_anomalies():
    low = fcdd_loss(torch.full((1, 2, 2), 0.1), torch.tensor([1]))
    high = fcdd_loss(torch.full((1, 2, 2), 5.0), torch.tensor([1]))
    assert high < low


def test_pseudo_huber_keeps_float32_precision_near_zero():
    # sqrt(a^2 + 1) - 1 in float32 returns 0 for a = 1e-4 (true value 5e-9) and is ~1 % off at 1e-2
    a = torch.tensor([1e-4, 1e-3, 1e-2, 0.0, 3.0], dtype=torch.float32)
    exact = (torch.sqrt(a.double() ** 2 + 1) - 1).float()
    assert torch.allclose(pseudo_huber(a), exact, rtol=1e-6, atol=0)
    # large and infinite inputs (a diverged network) stay |a| - 1 and inf, never NaN
    big = pseudo_huber(torch.tensor([1e7, -1e20, float("inf")]))
    assert big[0] == 1e7 - 1 and big[1] == 1e20 and big[2] == float("inf")
