"""One place that builds feature extractors: multi-scale encoders and single-map backbones.

`build_encoder(name)` gives a module whose forward returns a list of feature maps (timm's
``features_only`` interface) for our small from-scratch CNN ("cnn"), our small ViT ("vit_tiny",
token grids after chosen blocks) or any timm model. `build_backbone(name, stride=)` gives the one map
detectors such as FCDD read: the encoder's stage whose stride is nearest the one asked for, as a
module whose forward returns that map. A backbone and an encoder of the same architecture share their
parameters' construction order and state-dict keys, so weights move between them unchanged.

Weights are never downloaded unless the caller asks for them with ``weights="pretrained"``; a local
file (safetensors or a torch state dict, e.g. our own self-supervised checkpoint) can be given instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from defectmine.backbones.capacity import DEFAULT_DEPTH, DEFAULT_NORM, batch_norms, check_capacity, set_bn_momentum
from defectmine.backbones.encoder import Encoder, check_out_indices
from defectmine.backbones.small_cnn import CNNEncoder, SmallCNN
from defectmine.backbones.timm_features import SUGGESTED_TIMM, create_timm, timm_probe
from defectmine.backbones.vit import VIT_CHANNELS_PER_WIDTH, VIT_DEPTH, GridViT, ViTEncoder
from defectmine.backbones.weights import load_weights_file
from defectmine.errors import ConfigError

SMALL_CNN = "cnn"
GRID_VIT = "vit_tiny"
# Our own architectures: built here, no published weights (local files, e.g. from `defectmine pretrain`).
OWN_BACKBONES = (SMALL_CNN, GRID_VIT)
# The small CNN's stages when no out_indices are given: strides 1, 2, 4, 8, i.e. the stages of the
# default stride-8 backbone, so that the default encoder loads our default pretrained weights whole.
CNN_DEFAULT_STAGES = 4
DEFAULT_PATCH = 8

__all__ = [
    "Backbone", "GRID_VIT", "OWN_BACKBONES", "SMALL_CNN", "SUGGESTED_TIMM",
    "build_backbone", "build_encoder", "list_backbones", "load_weights_file",
]


@dataclass
class Backbone:
    """A feature extractor with what callers need to know about its output."""

    module: nn.Module
    out_channels: int
    stride: int


def list_backbones() -> list[str]:
    return [*OWN_BACKBONES, *SUGGESTED_TIMM]


def build_encoder(
    name: str,
    in_chans: int = 3,
    *,
    out_indices: Sequence[int] | None = None,
    width: int = 16,
    weights: str | Path | None = None,
    patch_size: int | None = None,
) -> Encoder:
    """Build a multi-scale encoder: ``encoder(x)`` is a list of maps, shallow to deep.

    ``encoder.channels`` and ``encoder.reductions`` give each map's channel count and stride (input
    size / map size), like timm's ``feature_info.channels()`` / ``.reduction()``. The network stops at
    the deepest stage asked for, as timm's ``features_only`` models do.

    Args:
        name: ``"cnn"``, ``"vit_tiny"`` or a timm model name (``"resnet18"``, ...).
        in_chans: number of input channels (1 for grayscale, 3 for RGB).
        out_indices: stages to return. For "cnn", stage i is the end of the i-th block of convolutions,
            before the next pooling: stride 2**i and width * 2**i channels (capped at 8 * width); default
            (0, 1, 2, 3). For "vit_tiny", index i is the token grid after transformer block i (0 to 3,
            through the final LayerNorm); default all four. A ViT has no pyramid: every map has the
            patch stride. For timm models, timm's stage numbers; default timm's (usually all stages).
        width: base channel count of the small CNN; the ViT's embedding is 8 * width (ignored for timm).
        weights: ``None`` (random init), ``"pretrained"`` (timm's published weights; needs network), or a
            path to a local weights file (safetensors or torch state dict), e.g. our self-supervised
            ``backbone.safetensors``.
        patch_size: the ViT's patch size, which is the stride of all its maps (default 8); "vit_tiny" only.
    """
    _check_published(name, weights)
    if patch_size is not None and name != GRID_VIT:
        raise ConfigError(f"patch_size={patch_size} only applies to {GRID_VIT!r}; drop it for {name!r}.")
    if name == SMALL_CNN:
        indices = tuple(range(CNN_DEFAULT_STAGES)) if out_indices is None else check_out_indices(name, out_indices)
        module = CNNEncoder(in_chans=in_chans, width=width, n_pools=indices[-1], out_indices=indices)
    elif name == GRID_VIT:
        patch = DEFAULT_PATCH if patch_size is None else patch_size
        if not isinstance(patch, int) or patch < 1:
            raise ConfigError(f"patch_size={patch_size!r} must be a positive integer, e.g. 8 or 16.")
        indices = tuple(range(VIT_DEPTH)) if out_indices is None else check_out_indices(name, out_indices, VIT_DEPTH)
        module = _vit(ViTEncoder, in_chans, width, patch, depth=indices[-1] + 1, out_indices=indices)
    else:
        module = create_timm(name, in_chans, out_indices, pretrained=weights == "pretrained", encoder=True)
    return _load_local(module, weights)


def build_backbone(
    name: str,
    in_chans: int = 3,
    *,
    stride: int = 8,
    width: int = 16,
    weights: str | Path | None = None,
    drop_path: float = 0.0,
    depth: int = DEFAULT_DEPTH,
    norm: str = DEFAULT_NORM,
    bn_momentum: float | None = None,
) -> Backbone:
    """Build a backbone by name: the encoder's stage whose stride is nearest `stride`, as one map.

    ``Backbone.module(x)`` is a tensor (N, out_channels, H / stride, W / stride). Its parameters, their
    random init and state-dict keys are those of the encoder cut at that stage, and have not changed
    since backbones came before encoders: saved models and pretrained weights keep loading.

    Args:
        name: ``"cnn"`` (small from-scratch CNN), ``"vit_tiny"`` (small ViT, patch size = stride, token grid
            as feature map) or a timm model name (``"resnet18"``, ``"vgg16"``, ...).
        in_chans: number of input channels (1 for grayscale, 3 for RGB).
        stride: wanted output stride (the feature map is input_size / stride); timm models are cut at
            the stage with the nearest stride, which is what ``Backbone.stride`` reports.
        width: base channel count of the small CNN; the ViT's embedding is 8 * width (ignored for timm models).
        weights: ``None`` (random init), ``"pretrained"`` (timm's published weights; needs network),
            or a path to a local weights file (safetensors or torch state dict).
        drop_path: stochastic depth rate (timm's ``drop_path_rate``) for timm models with residual
            blocks; our own "cnn" and "vit_tiny" have none (a non-zero value is refused).
        depth: convolutions per stage after the first of the "cnn" backbone (default 2; others refuse
            any other value).
        norm: "batch" (default) or "group": group norm instead of batch norm, in the "cnn" backbone and
            in timm models whose batch norms timm's ``norm_layer`` replaces (the resnet family);
            refused for "vit_tiny", for timm models without batch norm and with published weights.
        bn_momentum: momentum of every batch-norm layer's running statistics (None: torch's 0.1).
        See `capacity.check_capacity` for what is refused.
    """
    if stride < 1 or stride & (stride - 1):
        raise ConfigError(f"stride={stride}: must be a power of two (e.g. 8 or 16).")
    _check_published(name, weights)
    check_capacity(name, depth=depth, norm=norm, bn_momentum=bn_momentum, weights=weights, owner="build_backbone",
                   drop_path=drop_path)
    if name == SMALL_CNN:
        # stage log2(stride) has exactly this stride; the network ends there
        module = SmallCNN(in_chans=in_chans, width=width, n_pools=stride.bit_length() - 1, depth=depth, norm=norm)
    elif name == GRID_VIT:
        # every block has the patch stride: the nearest stage is the deepest (ties go deeper, as for timm)
        module = _vit(GridViT, in_chans, width, stride, depth=VIT_DEPTH, out_indices=None)
    else:
        # The probe also draws its random init from the global generator: seeded runs depend on it.
        probe = timm_probe(name, in_chans)
        if norm == "group" and not batch_norms(probe):
            raise ConfigError(f"build_backbone: norm='group' replaces batch norm, and {name!r} has none. Fix: "
                              "norm=batch, or a backbone with batch norm such as resnet18.")
        reductions = probe.feature_info.reduction()
        stage = min(range(len(reductions)), key=lambda i: (abs(reductions[i] - stride), -i))
        module = create_timm(name, in_chans, (stage,), pretrained=weights == "pretrained", encoder=False,
                             drop_path=drop_path, norm=norm)
    if bn_momentum is not None:
        set_bn_momentum(module, bn_momentum, name)
    module = _load_local(module, weights)
    return Backbone(module, module.channels[-1], module.reductions[-1])


def _vit(cls: type[GridViT], in_chans: int, width: int, patch: int, *, depth: int, out_indices) -> GridViT:
    return cls(in_chans=in_chans, dim=VIT_CHANNELS_PER_WIDTH * width, depth=depth, patch=patch, out_indices=out_indices)


def _check_published(name: str, weights: str | Path | None) -> None:
    if weights == "pretrained" and name in OWN_BACKBONES:
        raise ConfigError(f"backbone {name!r} has no published weights: pass a local weights file or none.")


def _load_local(module: nn.Module, weights: str | Path | None) -> nn.Module:
    """`module` with a local weights file loaded ("pretrained" weights were loaded by timm)."""
    if weights not in (None, "pretrained"):
        load_weights_file(module, Path(weights))
    return module
