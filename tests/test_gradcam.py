"""Grad-CAM: exact answers on a hand-built net, inference mode, no side effects, and trained detectors."""

import numpy as np
import pytest
import torch
from torch import nn

from defectmine.errors import ConfigError, DataError
from defectmine.explain import detector_gradcam, grad_cam, last_convolution


class HalfSplit(nn.Module):
    """(N, 1, H, W) -> (N, 2, H, W): channel 0 is the image's left half, channel 1 its right half (zeros elsewhere)."""

    def forward(self, x):
        left = torch.zeros_like(x)
        left[..., : x.shape[-1] // 2] = 1.0
        return torch.cat([x * left, x * (1.0 - left)], dim=1)


class TwoHalves(nn.Module):
    """Logits (N, 2): the sums of the left and of the right half. Dropout shows whether eval mode is used."""

    def __init__(self, pool: int = 1):
        super().__init__()
        self.pool = nn.AvgPool2d(pool) if pool > 1 else nn.Identity()
        self.split = HalfSplit()
        self.dropout = nn.Dropout(0.5)
        self.logits = nn.Identity()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.logits(self.dropout(self.split(self.pool(x))).sum(dim=(2, 3))) * self.scale


def _images(n=2, size=8):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(0)) + 0.1


def _left(x):
    mask = torch.zeros_like(x[:, 0])
    mask[..., : x.shape[-1] // 2] = 1.0
    return mask


def test_only_the_half_that_drives_the_output_lights_up():
    model, x = TwoHalves().train(), _images()
    # d(left sum)/d(channel 0) = 1 everywhere, 0 for channel 1: the map is the left half of the image
    raw = grad_cam(model, model.split, x, target=0, normalize=False)
    assert torch.equal(raw, x[:, 0] * _left(x))
    right = grad_cam(model, model.split, x, target=1, normalize=False)
    assert torch.equal(right, x[:, 0] * (1 - _left(x)))


def test_relu_drops_evidence_against_the_target_and_maps_are_unit_per_image():
    model, x = TwoHalves(), _images()
    x[1] *= 5  # a brighter image: the normalised map must not care
    cam = grad_cam(model, model.split, x, target=lambda out: out[:, 0] - out[:, 1])
    # weights (+1, -1): the right half is -x there, removed by the ReLU
    expected = x[:, 0] * _left(x)
    expected = expected / expected.flatten(1).amax(dim=1)[:, None, None]
    torch.testing.assert_close(cam, expected)
    assert cam.flatten(1).amax(dim=1).tolist() == [1.0, 1.0] and (cam[..., 4:] == 0).all()


def test_low_resolution_layers_are_upsampled_to_the_input_size():
    model, x = TwoHalves(pool=4), _images(size=16)
    cam = grad_cam(model, model.split, x, target=0)
    assert cam.shape == (2, 16, 16) and 0 <= cam.min() and cam.max() == 1
    assert (cam[..., 10:] == 0).all() and (cam[..., :6] > 0).all()  # 4x4 grid, bilinear blend at the seam only


def test_works_inside_inference_mode_without_side_effects():
    model = TwoHalves().train()
    model.dropout.eval()  # a submodule in its own mode must get it back
    with torch.inference_mode():
        x = _images()
        cam = grad_cam(model, model.split, x, target=0, normalize=False)
    assert torch.equal(cam, x[:, 0] * _left(x))
    assert model.training and not model.dropout.training and model.split.training
    assert model.scale.grad is None and model.scale.requires_grad
    assert not model.split._forward_hooks


def test_hooks_and_modes_are_restored_when_the_target_is_wrong():
    model = TwoHalves().train()
    with pytest.raises(ConfigError, match="one scalar per image"):
        grad_cam(model, model.split, _images(), target=lambda out: out)
    assert not model.split._forward_hooks and model.training


@pytest.mark.parametrize(
    "layer,target,images,error,message",
    [
        ("logits", 0, _images(), ConfigError, "not a \\(N, K, h, w\\) map"),
        ("split", 5, _images(), ConfigError, "more than 5 classes"),
        ("split", "left", _images(), ConfigError, "class index"),
        ("split", 0, torch.zeros(1, 1, 8, 8, dtype=torch.uint8), DataError, "normalise"),
    ],
)
def test_bad_arguments_are_named(layer, target, images, error, message):
    model = TwoHalves()
    with pytest.raises(error, match=message):
        grad_cam(model, getattr(model, layer), images, target=target)


def test_a_layer_outside_the_model_is_named():
    with pytest.raises(ConfigError, match="ran 0 times"):
        grad_cam(TwoHalves(), HalfSplit(), _images(), target=0)


# -- trained detectors ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    from defectmine.data import ImageDataset, ImageSpec, scan_folder, write_synthetic_folder

    spec = ImageSpec(size=(32, 32), channels=1)
    folder = write_synthetic_folder(tmp_path_factory.mktemp("gradcam"), n_normal=16, n_anomalous=4, size=32)
    normal = [r for r in scan_folder(folder) if not r.is_anomalous]
    anomalous = [r for r in scan_folder(folder) if r.is_anomalous]
    test = ImageDataset(normal[12:] + anomalous[2:], spec)
    return ImageDataset(normal[:12], spec), ImageDataset(anomalous[:2], spec), test


@pytest.mark.parametrize("name,params", [("fcdd", {}), ("classifier", {"stride": 4})])
def test_trained_detectors_explain_their_image_score(sets, name, params):
    from defectmine.models.registry import create

    normal, anomalous, test = sets
    fast = {"epochs": 1, "width": 4, "batch_size": 8, "score_batch_size": 3, "device": "cpu", "quiet": True, "seed": 0}
    detector = create(name, **fast, **params)
    detector.fit(normal, anomalous)
    before = detector.score(test).image
    for parameter in detector.network_.parameters():
        parameter.grad = None  # the training loop may leave some; Grad-CAM must add none
    layer = last_convolution(detector.network_)
    network = detector.network_
    backbone = network.backbone if name == "fcdd" else network.backbones[0]
    assert layer is backbone.features[-3]  # the small CNN's last conv (then batch norm, ReLU), not FCDD's 1x1 head
    with torch.inference_mode():  # as TrainedDetector.score runs
        maps = detector_gradcam(detector, test)
    assert maps.shape == (len(test), 32, 32) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert np.isclose(maps.reshape(len(test), -1).max(axis=1), 1).any()  # some image has evidence
    assert not detector.network_.training and not layer._forward_hooks
    assert all(p.grad is None for p in detector.network_.parameters())
    np.testing.assert_array_equal(detector.score(test).image, before)
    # the tensor path gives the same maps, and scoring a single image works
    np.testing.assert_allclose(detector_gradcam(detector, test.raw_images()), maps, rtol=1e-5, atol=1e-6)
    assert detector_gradcam(detector, test.raw_images()[:1]).shape == (1, 32, 32)


def test_detector_gradcam_needs_a_fitted_detector(sets):
    from defectmine.errors import NotFittedError
    from defectmine.models.registry import create

    with pytest.raises(NotFittedError):
        detector_gradcam(create("fcdd"), sets[2])


def test_score_can_return_gradcam_maps_for_any_trained_detector():
    from defectmine.data import ImageDataset, ImageSpec
    from defectmine.errors import ConfigError
    from defectmine.models.registry import create

    spec = ImageSpec(size=(16, 16), channels=1)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (6, 1, 16, 16), dtype=torch.uint8, generator=generator)
    normal = ImageDataset.from_tensor(images, spec)
    detector = create("fcdd", epochs=1, width=4, batch_size=4, device="cpu", quiet=True).fit(normal)
    native, cam = detector.score(normal), detector.score(normal, heatmap="gradcam")
    np.testing.assert_allclose(cam.image, native.image)  # same image scores, other maps
    assert cam.maps.shape == (6, 16, 16) and np.isfinite(cam.maps).all() and cam.maps.max() <= 1.0
    with pytest.raises(ConfigError, match="heatmap='saliency' is unknown"):
        detector.score(normal, heatmap="saliency")
