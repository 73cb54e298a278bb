import pytest
import timm
import torch
from safetensors.torch import load_file, save_file
from timm.layers import build_sincos2d_pos_embed
from timm.models.vision_transformer import Block
from torch import nn

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


# -- reproducibility: build_backbone must stay what it was before encoders existed -----------------
# Verbatim copies of the backbone classes as they were before `build_encoder` (commit 0da8666). Seeded
# benchmark rows, saved models and pretrained weights depend on their parameters, init order and keys.


def _legacy_conv_block(cin, cout):
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class _LegacySmallCNN(nn.Module):
    def __init__(self, in_chans=3, width=16, n_pools=3):
        super().__init__()
        layers = []
        cin = in_chans
        for stage in range(n_pools + 1):
            cout = width * min(2**stage, 8)
            layers += _legacy_conv_block(cin, cout)
            if stage > 0:
                layers += _legacy_conv_block(cout, cout)
            if stage < n_pools:
                layers.append(nn.MaxPool2d(2))
            cin = cout
        self.features = nn.Sequential(*layers)

    def forward(self, x):
        return self.features(x)


class _LegacyGridViT(nn.Module):
    def __init__(self, in_chans=3, dim=128, depth=4, patch=8):
        super().__init__()
        self.patch_embed = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)
        self.blocks = nn.Sequential(*[Block(dim, max(1, dim // 32), mlp_ratio=4.0, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.patch = patch

    def forward(self, x):
        h, w = x.shape[-2] // self.patch, x.shape[-1] // self.patch
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        tokens = tokens + build_sincos2d_pos_embed([h, w], dim=tokens.shape[-1], device=x.device).to(tokens.dtype)
        return self.norm(self.blocks(tokens)).transpose(1, 2).reshape(len(x), -1, h, w)


class _LegacyTimmStage(nn.Module):
    def __init__(self, name, in_chans, stride):
        super().__init__()
        probe = timm.create_model(name, pretrained=False, features_only=True, in_chans=in_chans)
        reductions = probe.feature_info.reduction()
        stage = min(range(len(reductions)), key=lambda i: (abs(reductions[i] - stride), -i))
        self.model = timm.create_model(name, pretrained=False, features_only=True, out_indices=(stage,), in_chans=in_chans)

    def forward(self, x):
        return self.model(x)[-1]


def _legacy(name, in_chans, stride, width):
    if name == "cnn":
        return _LegacySmallCNN(in_chans, width, stride.bit_length() - 1)
    if name == "vit_tiny":
        return _LegacyGridViT(in_chans, 8 * width, 4, stride)
    return _LegacyTimmStage(name, in_chans, stride)


def _seeded(build):
    """(module, the next random number): the latter shows the same amount of randomness was drawn."""
    torch.manual_seed(0)
    module = build()
    return module, torch.rand(4)


@pytest.mark.parametrize(
    "name,in_chans,stride,width",
    [("cnn", 1, 8, 16), ("cnn", 3, 4, 4), ("cnn", 1, 16, 8), ("vit_tiny", 1, 8, 4), ("vit_tiny", 3, 16, 4),
     ("resnet18", 1, 8, 8)],
)
def test_build_backbone_is_bit_for_bit_the_pre_encoder_backbone(name, in_chans, stride, width):
    new, new_next = _seeded(lambda: build_backbone(name, in_chans, stride=stride, width=width).module)
    old, old_next = _seeded(lambda: _legacy(name, in_chans, stride, width))
    assert [n for n, _ in new.named_parameters()] == [n for n, _ in old.named_parameters()]
    new_state, old_state = new.state_dict(), old.state_dict()
    assert list(new_state) == list(old_state)
    for key in old_state:
        assert torch.equal(new_state[key], old_state[key]), key
    assert torch.equal(new_next, old_next)
    x = torch.randn(2, in_chans, 32, 32)
    with torch.no_grad():
        assert torch.equal(new.eval()(x), old.eval()(x))
        assert torch.equal(new.train()(x), old.train()(x))  # batch-norm statistics path too


def test_state_dict_of_a_pre_encoder_backbone_loads_with_strict_keys(tmp_path):
    torch.manual_seed(3)
    old = _LegacySmallCNN(1, 4, 3)
    path = tmp_path / "old.safetensors"
    save_file({k: v.contiguous() for k, v in old.state_dict().items()}, str(path))
    new = build_backbone("cnn", 1, stride=8, width=4).module
    new.load_state_dict(load_file(str(path)), strict=True)
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(new.eval()(x), old.eval()(x))
    # and through the weights-file path that detectors use
    loaded = build_backbone("cnn", 1, stride=8, width=4, weights=path).module
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in old.state_dict().items())


def test_seeded_fcdd_network_is_unchanged():
    """FCDD's whole network (backbone + head), the benchmark rows' model, built under one seed."""
    from defectmine.models.registry import create
    from defectmine.data import ImageSpec

    torch.manual_seed(0)
    network = create("fcdd", width=8)._build_network(ImageSpec(size=(32, 32), channels=1))
    torch.manual_seed(0)
    backbone = _LegacySmallCNN(1, 8, 3)
    head = nn.Conv2d(backbone.features[-3].out_channels, 1, kernel_size=1, bias=False)
    expected = {**{f"backbone.{k}": v for k, v in backbone.state_dict().items()}, "head.weight": head.weight}
    assert list(network.state_dict()) == list(expected)
    assert all(torch.equal(network.state_dict()[k], v) for k, v in expected.items())
