"""LIAC-specific behaviour: the two backbones, D(x) as a classifier feature, LIL + ACL, the ACL sign."""

import pytest
import torch

from defectmine.data import ImageDataset, ImageSpec, scan_folder, write_synthetic_folder
from defectmine.errors import ConfigError
from defectmine.models import liac as liac_module
from defectmine.models.losses import abnormality_capturing_loss, pair_distance
from defectmine.models.registry import create

SPEC = ImageSpec(size=(32, 32), channels=1)
FAST = {"epochs": 2, "width": 4, "stride": 2, "batch_size": 16, "device": "cpu", "quiet": True}


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = write_synthetic_folder(tmp_path_factory.mktemp("synthetic"), n_normal=28, n_anomalous=4, size=32)
    records = scan_folder(root)
    return {
        "normal": ImageDataset([r for r in records if not r.is_anomalous], SPEC),
        "anomalous": ImageDataset([r for r in records if r.is_anomalous], SPEC),
    }


def _distance_after_one_step(label: int, variant: str) -> tuple[float, float]:
    """D of a hand-made feature pair before and after one gradient step on the ACL of one image."""
    f_t = torch.tensor([[1.0, 2.0, 0.5]], requires_grad=True)
    f_s = torch.tensor([[2.0, 0.5, 1.0]], requires_grad=True)
    before = pair_distance(f_t, f_s)
    abnormality_capturing_loss(before, torch.tensor([label]), variant).backward()
    with torch.no_grad():
        after = pair_distance(f_t - 0.1 * f_t.grad, f_s - 0.1 * f_s.grad)
    return before.item(), after.item()


@pytest.mark.parametrize("label, pulled_together", [(0, True), (1, False)])
def test_acl_intent_pulls_normal_pairs_together_and_pushes_anomalous_pairs_apart(label, pulled_together):
    before, after = _distance_after_one_step(label, "intent")
    assert (after < before) == pulled_together


@pytest.mark.parametrize("label, pulled_together", [(0, False), (1, True)])
def test_acl_as_printed_has_the_opposite_signs(label, pulled_together):
    before, after = _distance_after_one_step(label, "as_printed")
    assert (after < before) == pulled_together


def test_two_backbones_of_one_structure_both_trained(sets):
    detector = create("liac", **FAST).fit(sets["normal"], sets["anomalous"])
    initial = create("liac", **FAST)
    initial._start_fit(sets["normal"], sets["anomalous"], None)  # same seed: the weights before training
    first, second = detector.network_.backbones
    assert [p.shape for p in first.parameters()] == [p.shape for p in second.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters()))
    for trained, before in zip(detector.network_.backbones, initial.network_.backbones):
        assert any(not torch.equal(a, b) for a, b in zip(trained.parameters(), before.parameters()))
    # the linear layer sees [f_T, f_S, D(x)]
    channels = detector.network_.n_map_channels
    assert detector.network_.head.in_features == channels + 1 and channels == 2 * 8  # width 4, one pool


@pytest.mark.parametrize("variant", ["intent", "as_printed"])
def test_total_loss_is_lil_plus_the_configured_acl(monkeypatch, sets, variant):
    seen = []

    def spy(distance, labels, acl_variant):
        seen.append(acl_variant)
        return abnormality_capturing_loss(distance, labels, acl_variant)

    monkeypatch.setattr(liac_module, "abnormality_capturing_loss", spy)
    detector = create("liac", acl=variant, **FAST).fit(sets["normal"], sets["anomalous"])
    assert detector.config.loss == "lil"
    assert seen and set(seen) == {variant}


def test_acl_weight_zero_leaves_the_classification_loss_alone(monkeypatch, sets):
    monkeypatch.setattr(liac_module, "abnormality_capturing_loss", lambda *a: pytest.fail("ACL was computed"))
    create("liac", acl_weight=0.0, **FAST).fit(sets["normal"], sets["anomalous"])


def test_unknown_acl_variant_is_a_config_error():
    with pytest.raises(ConfigError, match="liac: acl='printed'.*intent, as_printed"):
        create("liac", acl="printed")


def test_unknown_loss_name_is_a_config_error():
    with pytest.raises(ConfigError, match="loss='lil2'.*known: ce, .*lil"):
        create("liac", loss="lil2")


def test_liac_errors_name_liac():
    with pytest.raises(ConfigError, match="^liac: lr"):
        create("liac", lr=0)
