"""VAE + Grad-CAM: the pure loss pieces on hand-computed values, the gradient-weighted attention,
the options, and the maps (the fit/score/save/load contract is in test_detectors.py)."""

import math

import numpy as np
import pytest
import torch

from defectmine.data import ImageDataset, ImageSpec, scan_folder, write_synthetic_folder
from defectmine.errors import ConfigError
from defectmine.explain.gradcam import gradient_weighted_sum
from defectmine.models.registry import create
from defectmine.models.vae_gradcam import ConvVAE, attention, kl_divergence, log_barrier, vae_gradcam_loss

SPEC = ImageSpec(size=(32, 32), channels=1)
FAST = {"epochs": 12, "batch_size": 16, "lr": 3e-3, "eval_every": 4, "blocks": 3}


def test_log_barrier_matches_equation_5_by_hand():
    t = 20.0
    z = torch.tensor([-0.5, -1.0 / t**2, 0.0, 0.3])
    expected = [
        -math.log(0.5) / t,                                   # inside: -log(-z)/t
        -math.log(1.0 / t**2) / t,                            # the meeting point, log branch
        -math.log(1.0 / t**2) / t + 1.0 / t,                  # linear: t*0 - log(1/t^2)/t + 1/t
        t * 0.3 - math.log(1.0 / t**2) / t + 1.0 / t,
    ]
    np.testing.assert_allclose(log_barrier(z, t).numpy(), expected, rtol=1e-6)


def test_log_barrier_is_continuous_and_rejects_bad_t():
    t = 5.0
    edge = -1.0 / t**2
    below, above = log_barrier(torch.tensor([edge - 1e-6, edge + 1e-6]), t)
    assert abs(float(below) - float(above)) < 1e-4
    with pytest.raises(ConfigError, match="t=0"):
        log_barrier(torch.zeros(1), 0)


def test_kl_divergence_by_hand():
    mu = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    logvar = torch.tensor([[0.0, 0.0], [0.0, math.log(2.0)]])
    # 0.5 * (mu^2 + sigma^2 - 1 - log sigma^2) per dimension
    expected = [0.0, 0.5 * 1.0 + 0.5 * (2.0 - 1.0 - math.log(2.0))]
    np.testing.assert_allclose(kl_divergence(mu, logvar).numpy(), expected, rtol=1e-6)


def test_gradient_weighted_sum_uses_the_gradient_weights():
    activations = torch.ones(1, 2, 2, 2)
    activations[0, 1] = 3.0
    grads = torch.zeros(1, 2, 2, 2)
    grads[0, 0] = 1.0   # alpha_0 = 1
    grads[0, 1] = -1.0  # alpha_1 = -1: the unweighted sum (4) would differ
    np.testing.assert_allclose(gradient_weighted_sum(activations, grads).numpy(), np.full((1, 2, 2), -2.0))
    with pytest.raises(ConfigError, match="must both be"):
        gradient_weighted_sum(activations, grads[:, :1])


def test_barrier_term_trains_the_encoder_through_the_attention():
    torch.manual_seed(0)
    network = ConvVAE(SPEC, blocks=3, latent=4, width=4).train()
    images = torch.randn(4, 1, 32, 32)
    output = network(images)
    plain = vae_gradcam_loss(output, images, beta=0.0, barrier_weight=0.0, t=20.0)
    with_barrier = vae_gradcam_loss(output, images, beta=0.0, barrier_weight=1.0, t=20.0)
    coverage = 1.0 - attention(output, create_graph=True).flatten(1).mean(1)  # keeps the graph for below
    barrier = log_barrier(coverage, 20.0).mean()
    np.testing.assert_allclose(float((with_barrier - plain).detach()), float(barrier.detach()), rtol=1e-5)
    first = network.encoder[0][0].weight
    (g_plain,) = torch.autograd.grad(plain, first, retain_graph=True)
    (g_barrier,) = torch.autograd.grad(with_barrier, first)
    assert not torch.allclose(g_plain, g_barrier)  # the barrier's gradient reaches the encoder


def test_labelled_anomalies_pay_a_bounded_hinge_and_no_normal_terms():
    torch.manual_seed(0)
    network = ConvVAE(SPEC, blocks=3, latent=4, width=4).train()
    images = torch.randn(4, 1, 32, 32)
    output = network(images)
    labels = torch.tensor([0.0, 0.0, 1.0, 1.0])
    errors = (output.reconstruction - images).pow(2).flatten(1).mean(1).detach()
    per_image = errors + 0.1 * kl_divergence(output.mu, output.logvar).detach()
    kw = {"beta": 0.1, "barrier_weight": 0.0, "t": 20.0}
    # weight 0: the mean over the two normal images only
    np.testing.assert_allclose(float(vae_gradcam_loss(output, images, labels=labels, **kw).detach()),
                               float(per_image[:2].mean()), rtol=1e-5)
    # the hinge: relu(margin * mean normal error - anomaly error), averaged over the anomalies
    margin = 50.0  # far above any anomaly's error: both anomalies pull
    expected = per_image[:2].mean() + 0.5 * (margin * errors[:2].mean() - errors[2:]).mean()
    got = vae_gradcam_loss(output, images, labels=labels, anomaly_weight=0.5, anomaly_margin=margin, **kw)
    np.testing.assert_allclose(float(got.detach()), float(expected), rtol=1e-5)
    # an anomaly past the margin pulls no more: the loss is bounded below by the normal terms
    low = vae_gradcam_loss(output, images, labels=labels, anomaly_weight=0.5, anomaly_margin=1.0 + 1e-6, **kw).detach()
    assert float(low) >= float(per_image[:2].mean()) - 1e-6
    # the hinge's gradient reaches the network only through the anomalies' reconstructions
    (grad,) = torch.autograd.grad(got, output.reconstruction)
    assert grad[2:].abs().sum() > 0 and torch.allclose(
        grad[:2], torch.autograd.grad(vae_gradcam_loss(output, images, labels=labels, **kw), output.reconstruction)[0][:2])


@pytest.mark.parametrize("params, match", [
    ({"anomaly_share": 0.25}, "needs anomaly_weight"),
    ({"anomaly_weight": 1.0, "anomaly_share": 1.0}, "anomaly_share=1.0"),
    ({"anomaly_weight": -1.0}, "anomaly_weight=-1.0"),
    ({"anomaly_weight": 1.0, "anomaly_margin": 1.0}, "anomaly_margin=1.0"),
    ({"anomaly_map": "both"}, "anomaly_map"),
    ({"backbone": "resnet18"}, "own VAE encoder"),
    ({"synthetic": "cutpaste"}, "never on synthetic"),
    ({"barrier_t": 0.0}, "barrier_t"),
    ({"latent": 0}, "latent"),
])
def test_bad_options_are_named(params, match):
    with pytest.raises(ConfigError, match=match):
        create("vae_gradcam", **params)


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = write_synthetic_folder(tmp_path_factory.mktemp("vae"), n_normal=36, n_anomalous=12, size=32)
    records = scan_folder(root)
    normal = [r for r in records if not r.is_anomalous]
    anomalous = [r for r in records if r.is_anomalous]
    return (ImageDataset(normal[:28], SPEC),
            ImageDataset([r.with_split("val") for r in normal[28:32] + anomalous[:4]], SPEC),
            ImageDataset([r.with_split("test") for r in normal[32:] + anomalous[4:]], SPEC))


def test_residual_map_is_full_resolution_and_peaks_on_the_defect(sets):
    normal, val, test = sets
    detector = create("vae_gradcam", device="cpu", quiet=True, anomaly_map="residual", **FAST).fit(normal, val=val)
    scores = detector.score(test)
    masks = test.masks()
    defect = [i for i in range(len(test)) if masks[i].any()]
    inside = np.mean([scores.maps[i][masks[i]].mean() for i in defect])
    outside = np.mean([scores.maps[i][~masks[i]].mean() for i in defect])
    assert scores.maps.shape == (len(test), 32, 32) and inside > 2 * outside
    # the image score is the reconstruction error, whichever map is drawn
    detector.config.anomaly_map = "attention"
    attention_scores = detector.score(test)
    np.testing.assert_allclose(attention_scores.image, scores.image, rtol=1e-5)
    assert attention_scores.maps.min() >= 0 and attention_scores.maps.max() <= 1  # sigmoid attention


def test_anomaly_weight_trains_on_the_labelled_anomalies(sets):
    normal, val, test = sets
    anomalous = ImageDataset([r.with_split("train") for r in test.records if r.is_anomalous][:4], SPEC)
    unsupervised = create("vae_gradcam", device="cpu", quiet=True, **FAST)
    # without the weight, labelled anomalies are ignored: the same network as a fit without them
    ignored = unsupervised.fit(normal, anomalous, val=val).score(test, maps=False).image
    alone = create("vae_gradcam", device="cpu", quiet=True, **FAST).fit(normal, val=val).score(test, maps=False).image
    np.testing.assert_allclose(ignored, alone, rtol=1e-5)
    pushed = create("vae_gradcam", device="cpu", quiet=True, anomaly_weight=10.0, anomaly_margin=4.0, **FAST)
    pushed.fit(normal, anomalous, val=val)

    def anomaly_to_normal(detector):
        trained_on = detector.score(anomalous, maps=False).image.mean()
        return trained_on / detector.score(normal, maps=False).image.mean()

    # the hinge raises the trained-on anomalies' error against the normal images'
    assert anomaly_to_normal(pushed) > 1.5 * anomaly_to_normal(unsupervised)  # 5.0 vs 2.4 when written
