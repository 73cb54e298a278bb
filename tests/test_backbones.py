import pytest
import torch
from safetensors.torch import save_file

from defectmine.backbones import build_backbone
from defectmine.errors import ConfigError


@pytest.mark.parametrize("stride", [4, 8, 16])
def test_small_cnn_output_stride(stride):
    backbone = build_backbone("cnn", in_chans=1, stride=stride, width=4)
    out = backbone.module(torch.zeros(2, 1, 32, 32))
    assert backbone.stride == stride
    assert out.shape == (2, backbone.out_channels, 32 // stride, 32 // stride)


def test_timm_backbone_is_cut_at_requested_stride():
    backbone = build_backbone("resnet18", in_chans=1, stride=8)
    out = backbone.module(torch.zeros(1, 1, 64, 64))
    assert backbone.stride == 8 and out.shape == (1, backbone.out_channels, 8, 8)


def test_unknown_backbone_names_the_fix():
    with pytest.raises(ConfigError, match="unknown backbone 'resnet9000'"):
        build_backbone("resnet9000")


def test_small_cnn_has_no_published_weights():
    with pytest.raises(ConfigError, match="no published weights"):
        build_backbone("cnn", weights="pretrained")


def test_local_weights_file_round_trip_with_channel_adaptation(tmp_path):
    rgb = build_backbone("cnn", in_chans=3, width=4)
    path = tmp_path / "weights.safetensors"
    save_file({f"backbone.{k}": v.contiguous() for k, v in rgb.module.state_dict().items()}, str(path))
    gray = build_backbone("cnn", in_chans=1, width=4, weights=path)
    first_rgb = rgb.module.state_dict()["features.0.weight"]
    first_gray = gray.module.state_dict()["features.0.weight"]
    assert torch.allclose(first_gray, first_rgb.sum(dim=1, keepdim=True))
    last = "features.4.weight"
    assert torch.equal(gray.module.state_dict()[last], rgb.module.state_dict()[last])


def test_weights_file_of_other_architecture_is_rejected(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"something.else": torch.zeros(3)}, str(path))
    with pytest.raises(ConfigError, match="no tensor in this file matches"):
        build_backbone("cnn", weights=path)


def test_missing_weights_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        build_backbone("cnn", weights=tmp_path / "nope.pt")
