"""The capacity levers of the image detectors' backbones: depth (convs per stage of the small CNN),
norm (batch or group norm) and bn_momentum."""

import numpy as np
import pytest
import torch
from torch import nn

from defectmine.backbones import build_backbone
from defectmine.backbones.capacity import norm_groups
from defectmine.backbones.small_cnn import SmallCNN
from defectmine.data import ImageSpec
from defectmine.errors import ConfigError
from defectmine.models.registry import create, load_detector

SPEC = ImageSpec(size=(16, 16), channels=1)
# The default small CNN (width 4, stride 8), layer by layer: C conv, B batch norm, R ReLU, P max pool.
DEFAULT_LAYERS = "CBRP" "CBRCBRP" "CBRCBRP" "CBRCBR"
# Scores of the default 2-epoch FCDD fit of `sets`, recorded before the capacity levers existed.
PINNED_NORMAL = [0.00163543, 0.00139451, 0.00131541, 0.00153705]
PINNED_ANOMALOUS = [0.00144503, 0.00164545, 0.00160098]


@pytest.fixture(scope="module")
def sets(tiny_training_sets):
    return tiny_training_sets


def _fit(sets, detector="fcdd", **params):
    normal, anomalous = sets
    return create(detector, epochs=2, width=4, batch_size=4, device="cpu", quiet=True, **params).fit(normal, anomalous)


def _count(module: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in module.modules())


def _letters(module: SmallCNN) -> str:
    kinds = {nn.Conv2d: "C", nn.BatchNorm2d: "B", nn.GroupNorm: "G", nn.ReLU: "R", nn.MaxPool2d: "P"}
    return "".join(kinds[type(layer)] for layer in module.features)


# --- defaults unchanged ----------------------------------------------------------------------------------

def test_default_cnn_layers_and_fit_are_those_from_before_the_levers(sets):
    assert _letters(build_backbone("cnn", 1, stride=8, width=4).module) == DEFAULT_LAYERS
    detector = _fit(sets)
    keys = [k for k in detector.network_.state_dict() if k.endswith(".weight")]
    assert keys == [f"backbone.features.{i}.weight" for i in (0, 1, 4, 5, 7, 8, 11, 12, 14, 15, 18, 19, 21, 22)] + [
        "head.weight"]
    np.testing.assert_allclose(detector.score(sets[0], maps=False).image[:4], PINNED_NORMAL, rtol=1e-3)
    np.testing.assert_allclose(detector.score(sets[1], maps=False).image, PINNED_ANOMALOUS, rtol=1e-3)
    assert all(m.momentum == 0.1 for m in detector.network_.modules() if isinstance(m, nn.BatchNorm2d))


# --- depth -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("depth,convs", [(1, 4), (2, 7), (3, 10)])
def test_depth_sets_the_convs_of_every_stage_after_the_first(depth, convs):
    backbone = build_backbone("cnn", 1, stride=8, width=4, depth=depth)
    assert _count(backbone.module, nn.Conv2d) == convs
    assert backbone.out_channels == 32 and backbone.stride == 8
    assert backbone.module(torch.zeros(2, 1, 16, 16)).shape == (2, 32, 2, 2)


def test_deeper_cnn_taps_every_stage_at_its_end():
    net = SmallCNN(in_chans=1, width=4, n_pools=2, out_indices=(0, 1, 2), depth=3)
    maps = net.forward_stages(torch.zeros(1, 1, 16, 16))
    assert [tuple(m.shape[1:]) for m in maps] == [(4, 16, 16), (8, 8, 8), (16, 4, 4)]
    assert maps[-1].shape == net(torch.zeros(1, 1, 16, 16)).shape


# --- norm ------------------------------------------------------------------------------------------------

def test_group_norm_replaces_every_batch_norm_of_the_cnn():
    module = build_backbone("cnn", 1, stride=8, width=6, norm="group").module
    norms = [m for m in module.modules() if isinstance(m, nn.GroupNorm)]
    assert _count(module, nn.BatchNorm2d) == 0 and len(norms) == 7
    assert [(m.num_groups, m.num_channels) for m in norms[:3]] == [(6, 6), (6, 12), (6, 12)]
    assert _letters(module) == DEFAULT_LAYERS.replace("B", "G")


def test_norm_groups_is_the_largest_divisor_up_to_eight():
    assert [norm_groups(c) for c in (1, 4, 6, 12, 16, 24, 64, 7)] == [1, 4, 6, 6, 8, 8, 8, 7]


def test_group_norm_reaches_timm_resnets():
    module = build_backbone("resnet18", 1, stride=8, norm="group").module
    assert _count(module, nn.GroupNorm) > 0 and _count(module, nn.modules.batchnorm._BatchNorm) == 0


@pytest.mark.parametrize("name,message", [
    ("convnext_atto", "'convnext_atto' has none"),  # layer norm: group norm would replace it, not batch norm
    ("efficientnet_b0", "'efficientnet_b0' cannot"),  # its norm_layer must take an activation
])
def test_group_norm_is_refused_where_timm_cannot_replace_batch_norm(name, message):
    with pytest.raises(ConfigError, match=message):
        build_backbone(name, 1, stride=8, norm="group")


# --- bn_momentum -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["cnn", "resnet18"])
def test_bn_momentum_reaches_every_batch_norm(name):
    module = build_backbone(name, 1, stride=8, width=4, bn_momentum=0.01).module
    momenta = {m.momentum for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    assert momenta == {0.01}


def test_bn_momentum_is_refused_for_a_backbone_without_batch_norm():
    with pytest.raises(ConfigError, match="bn_momentum=0.01.*'convnext_atto' has no batch norm"):
        build_backbone("convnext_atto", 1, stride=8, bn_momentum=0.01)


# --- detectors -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("params", [{"depth": 3}, {"norm": "group"}, {"bn_momentum": 0.5}])
def test_fcdd_fits_with_each_lever_and_it_changes_the_scores(sets, params):
    detector = _fit(sets, **params)
    scores = detector.score(sets[0], maps=False).image
    assert np.isfinite(scores).all()
    assert not np.allclose(scores[:4], PINNED_NORMAL, rtol=1e-2)


@pytest.mark.parametrize("detector", ["classifier", "liac"])
def test_classifier_and_liac_build_their_backbones_with_the_levers(detector):
    model = create(detector, width=4, depth=3, norm="group", device="cpu")
    network = model._build_network(SPEC)
    n_backbones = 2 if detector == "liac" else 1
    n_pools = model.config.stride.bit_length() - 1
    assert _count(network, nn.GroupNorm) == (1 + 3 * n_pools) * n_backbones and _count(network, nn.BatchNorm2d) == 0
    momentum = create(detector, width=4, bn_momentum=0.2, device="cpu")._build_network(SPEC)
    assert {m.momentum for m in momentum.modules() if isinstance(m, nn.BatchNorm2d)} == {0.2}


@pytest.mark.parametrize("params", [{"depth": 3, "bn_momentum": 0.05}, {"norm": "group", "depth": 1}])
def test_levers_survive_save_and_load(sets, tmp_path, params):
    detector = _fit(sets, **params)
    detector.save(tmp_path / "model")
    loaded = load_detector(tmp_path / "model")
    assert {k: loaded.get_config()[k] for k in params} == params
    assert _count(loaded.network_, nn.Conv2d) == _count(detector.network_, nn.Conv2d)
    np.testing.assert_allclose(loaded.score(sets[0]).image, detector.score(sets[0]).image, rtol=1e-5)
    if "bn_momentum" in params:
        assert {m.momentum for m in loaded.network_.modules() if isinstance(m, nn.BatchNorm2d)} == {0.05}


def test_draem_keeps_its_own_depth():
    assert create("draem", depth=3).config.depth == 3
    with pytest.raises(ConfigError, match="draem: width and depth must be >= 1"):
        create("draem", depth=0)


# --- bad values ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("detector,params,message", [
    ("fcdd", {"depth": 0}, "fcdd: depth=0 must be a whole number >= 1"),
    ("fcdd", {"depth": 3, "backbone": "resnet18"}, "depth=3 only applies to the 'cnn' backbone.*Fix"),
    ("classifier", {"depth": 1, "backbone": "vit_tiny"}, "classifier: depth=1 only applies"),
    ("fcdd", {"norm": "layer"}, "norm='layer' is unknown.*batch, group"),
    ("fcdd", {"norm": "group", "backbone": "vit_tiny"}, "norm='group' does not apply to 'vit_tiny'"),
    ("fcdd", {"norm": "group", "backbone": "resnet18", "backbone_weights": "pretrained"}, "published weights"),
    ("fcdd", {"bn_momentum": 0.0}, r"bn_momentum=0.0 must be in \(0, 1\]"),
    ("fcdd", {"bn_momentum": 1.5}, r"bn_momentum=1.5 must be in \(0, 1\]"),
    ("fcdd", {"bn_momentum": 0.1, "norm": "group"}, "bn_momentum=0.1 needs batch norm"),
    ("liac", {"bn_momentum": 0.1, "backbone": "vit_tiny"}, "'vit_tiny' has no batch norm"),
    ("draem", {"norm": "group"}, "draem: norm='group' does not reach the networks it builds"),
    ("segdec", {"depth": 3}, "segdec: depth=3 does not reach"),
    ("vae_gradcam", {"bn_momentum": 0.01}, "vae_gradcam: bn_momentum=0.01 does not reach"),
])
def test_bad_capacity_values_raise_one_config_error(detector, params, message):
    with pytest.raises(ConfigError, match=message) as caught:
        create(detector, **params)
    assert "\n" not in str(caught.value)


def test_a_tune_space_file_can_search_the_levers():
    from defectmine.tune.space import parse_space

    dims = {d.name: d for d in parse_space("fcdd", {"depth": [1, 2, 3], "norm": ["batch", "group"]}, "test")}
    assert dims["depth"].choices == (1, 2, 3) and dims["norm"].choices == ("batch", "group")


@pytest.mark.parametrize("params", [{"norm": "group", "depth": 3}, {"bn_momentum": 0.05}])
def test_levers_export_with_the_checkpoints_scores(tmp_path, params):
    pytest.importorskip("onnxruntime")
    from defectmine.export import export_model
    from test_export import tiny_model

    result = export_model(tiny_model("fcdd", tmp_path / "model", **params), format="onnx")
    assert result.info.parity_max_abs_diff <= 1e-4
