"""Multi-scale encoders: maps, channels and strides per stage, the same weights as the backbones, weights files."""

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from defectmine.backbones import Encoder, build_backbone, build_encoder
from defectmine.errors import ConfigError

X1 = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))


def _check_maps(encoder, x):
    maps = encoder(x)
    assert isinstance(encoder, Encoder) and isinstance(maps, list)
    assert len(maps) == len(encoder.channels) == len(encoder.reductions) == len(encoder.out_indices)
    for fmap, channels, reduction in zip(maps, encoder.channels, encoder.reductions):
        assert fmap.shape == (len(x), channels, x.shape[-2] // reduction, x.shape[-1] // reduction)
    return maps


def test_cnn_encoder_taps_every_stage_before_pooling():
    encoder = build_encoder("cnn", 1, width=4)
    assert encoder.out_indices == (0, 1, 2, 3)
    assert encoder.channels == (4, 8, 16, 32) and encoder.reductions == (1, 2, 4, 8)
    maps = _check_maps(encoder, X1)
    # stage 0 is conv-bn-relu at full resolution: non-negative, not yet pooled
    assert maps[0].shape[-1] == 32 and (maps[0] >= 0).all()


def test_cnn_encoder_stops_at_the_deepest_stage_asked_for():
    encoder = build_encoder("cnn", 1, width=4, out_indices=(1, 4))
    assert encoder.channels == (8, 32) and encoder.reductions == (2, 16)  # capped at 8 * width
    _check_maps(encoder, X1)
    shallow = build_encoder("cnn", 1, width=4, out_indices=(2,))
    assert list(shallow.state_dict()) == list(build_backbone("cnn", 1, stride=4, width=4).module.state_dict())


@pytest.mark.parametrize("name,stride", [("cnn", 8), ("cnn", 4), ("vit_tiny", 8), ("vit_tiny", 16), ("resnet18", 8)])
def test_backbone_is_the_encoders_last_stage(name, stride):
    """Same seed -> same parameters and keys; the backbone's map is the encoder's last map."""
    if name == "cnn":
        kwargs = {"out_indices": tuple(range(stride.bit_length()))}
    elif name == "vit_tiny":
        kwargs = {"patch_size": stride}
    else:
        kwargs = {"out_indices": (2,)}  # resnet18's stride-8 stage
    torch.manual_seed(0)
    if name == "resnet18":  # build_backbone's probe draws random numbers first; draw the same
        timm.create_model(name, features_only=True, in_chans=1)
    encoder = build_encoder(name, 1, width=4, **kwargs).eval()
    torch.manual_seed(0)
    backbone = build_backbone(name, 1, stride=stride, width=4)
    module = backbone.module.eval()
    assert list(encoder.state_dict()) == list(module.state_dict())
    assert all(torch.equal(v, module.state_dict()[k]) for k, v in encoder.state_dict().items())
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(encoder(x)[-1], module(x))
    assert (encoder.channels[-1], encoder.reductions[-1]) == (backbone.out_channels, backbone.stride)


def test_backbone_state_dict_loads_into_the_encoder_with_strict_keys():
    backbone = build_backbone("cnn", 1, stride=8, width=4).module
    encoder = build_encoder("cnn", 1, width=4)
    encoder.load_state_dict(backbone.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(encoder.eval()(X1)[-1], backbone.eval()(X1))


def test_vit_encoder_grids_after_each_block_all_at_the_patch_stride():
    encoder = build_encoder("vit_tiny", 1, width=4, patch_size=16)
    assert encoder.out_indices == (0, 1, 2, 3) and encoder.reductions == (16,) * 4 and encoder.channels == (32,) * 4
    maps = _check_maps(encoder, X1)
    assert not torch.equal(maps[0], maps[-1])
    two_blocks = build_encoder("vit_tiny", 1, width=4, out_indices=(1,))
    assert len(two_blocks.blocks) == 2 and len(_check_maps(two_blocks, X1)) == 1


def test_timm_encoder_reports_timm_feature_info():
    encoder = build_encoder("resnet18", 1, out_indices=(1, 2, 3))
    assert encoder.channels == (64, 128, 256) and encoder.reductions == (4, 8, 16)
    _check_maps(encoder, torch.zeros(1, 1, 64, 64))


def test_pretrain_weights_load_into_the_encoder(tmp_path):
    from defectmine.data import ImageDataset, ImageSpec, scan_folder, write_synthetic_folder
    from defectmine.pretrain import pretrain

    folder = write_synthetic_folder(tmp_path / "images", n_normal=8, n_anomalous=0, size=32)
    images = ImageDataset(scan_folder(folder), ImageSpec(size=(32, 32), channels=1))
    result = pretrain(images, out_dir=tmp_path / "out", method="mim", epochs=1, width=4, stride=8,
                      batch_size=8, device="cpu", quiet=True)
    saved = load_file(str(result.weights))
    encoder = build_encoder("cnn", 1, width=4, weights=result.weights)
    state = encoder.state_dict()
    assert saved.keys() == state.keys()
    assert all(torch.equal(state[k], v) for k, v in saved.items())


def test_saved_vit_backbone_loads_into_the_vit_encoder(tmp_path):
    torch.manual_seed(1)
    backbone = build_backbone("vit_tiny", 1, stride=8, width=4).module
    path = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in backbone.state_dict().items()}, str(path))
    torch.manual_seed(2)
    encoder = build_encoder("vit_tiny", 1, width=4, weights=path)
    with torch.no_grad():
        assert torch.equal(encoder.eval()(X1)[-1], backbone.eval()(X1))


def test_own_encoders_have_no_published_weights():
    for name in ("cnn", "vit_tiny"):
        with pytest.raises(ConfigError, match="no published weights"):
            build_encoder(name, weights="pretrained")


def test_pretrained_timm_weights_are_asked_of_timm(monkeypatch):
    calls = []

    def offline(name, pretrained=False, **kwargs):
        calls.append(pretrained)
        raise OSError("no network")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(ConfigError, match="could not load pretrained weights for 'resnet18'.*local weights file"):
        build_encoder("resnet18", weights="pretrained")
    assert calls == [True]


@pytest.mark.parametrize(
    "name,kwargs,message",
    [
        ("cnn", {"out_indices": (2, 1)}, "increasing"),
        ("cnn", {"out_indices": (-1,)}, "stage numbers from 0"),
        ("cnn", {"out_indices": ()}, "non-empty"),
        ("vit_tiny", {"out_indices": (4,)}, "below 4"),
        ("cnn", {"patch_size": 8}, "only applies to 'vit_tiny'"),
        ("vit_tiny", {"patch_size": 0}, "positive integer"),
        ("resnet18", {"out_indices": (9,)}, "cannot be built as a feature extractor"),
        ("resnet9000", {}, "unknown backbone 'resnet9000'"),
    ],
)
def test_bad_options_are_named(name, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        build_encoder(name, 1, **kwargs)
