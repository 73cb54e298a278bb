"""One place that builds feature extractors.

`build_backbone("cnn")` gives our small from-scratch CNN, `build_backbone("vit_tiny")` a small ViT whose
patch-token grid is the feature map (see vit.py); any other name is a timm model truncated at the stage
whose output stride is closest to the one asked for. Weights are never downloaded unless the
caller asks for them with ``weights="pretrained"``; a local file (safetensors or a torch state dict,
e.g. our own self-supervised checkpoint) can be given instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from defectmine.backbones.small_cnn import SmallCNN
from defectmine.backbones.vit import VIT_CHANNELS_PER_WIDTH, GridViT
from defectmine.errors import ConfigError

log = logging.getLogger(__name__)

SMALL_CNN = "cnn"
GRID_VIT = "vit_tiny"
# Our own architectures: built here, no published weights (local files, e.g. from `defectmine pretrain`).
OWN_BACKBONES = (SMALL_CNN, GRID_VIT)
# Suggestions shown in errors and --help; any timm model with features_only support works.
SUGGESTED_TIMM = ("resnet18", "resnet34", "resnet101", "vgg16", "inception_v3", "efficientnet_b0")


@dataclass
class Backbone:
    """A feature extractor with what callers need to know about its output."""

    module: nn.Module
    out_channels: int
    stride: int


class _TimmStage(nn.Module):
    """Wraps a timm features_only model so that forward returns one tensor, not a list."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)[-1]


def list_backbones() -> list[str]:
    return [*OWN_BACKBONES, *SUGGESTED_TIMM]


def build_backbone(
    name: str,
    in_chans: int = 3,
    *,
    stride: int = 8,
    width: int = 16,
    weights: str | Path | None = None,
) -> Backbone:
    """Build a backbone by name.

    Args:
        name: ``"cnn"`` (small from-scratch CNN), ``"vit_tiny"`` (small ViT, patch size = stride, token grid
            as feature map) or a timm model name (``"resnet18"``, ``"vgg16"``, ...).
        in_chans: number of input channels (1 for grayscale, 3 for RGB).
        stride: wanted output stride (the feature map is input_size / stride); timm models are cut at
            the stage with the nearest stride, which is what ``Backbone.stride`` reports.
        width: base channel count of the small CNN; the ViT's embedding is 8 * width (ignored for timm models).
        weights: ``None`` (random init), ``"pretrained"`` (timm's published weights; needs network),
            or a path to a local weights file (safetensors or torch state dict).
    """
    if stride < 1 or stride & (stride - 1):
        raise ConfigError(f"stride={stride}: must be a power of two (e.g. 8 or 16).")
    if name in OWN_BACKBONES:
        if weights == "pretrained":
            raise ConfigError(f"backbone {name!r} has no published weights: pass a local weights file or none.")
        if name == SMALL_CNN:
            net = SmallCNN(in_chans=in_chans, width=width, n_pools=stride.bit_length() - 1)
        else:
            net = GridViT(in_chans=in_chans, dim=VIT_CHANNELS_PER_WIDTH * width, patch=stride)
        backbone = Backbone(net, net.out_channels, net.stride)
    else:
        backbone = _build_timm(name, in_chans, stride, pretrained=weights == "pretrained")
    if weights not in (None, "pretrained"):
        load_weights_file(backbone.module, Path(weights))
    return backbone


def _build_timm(name: str, in_chans: int, stride: int, pretrained: bool) -> Backbone:
    import timm

    if not timm.is_model(name):
        raise ConfigError(
            f"unknown backbone {name!r}: use 'cnn', 'vit_tiny' or a timm model name such as {', '.join(SUGGESTED_TIMM)}."
        )
    try:
        probe = timm.create_model(name, pretrained=False, features_only=True, in_chans=in_chans)
    except RuntimeError as err:  # timm raises for models without feature extraction support
        raise ConfigError(f"backbone {name!r} cannot be used as a feature extractor: {err}") from err
    reductions = probe.feature_info.reduction()
    stage = min(range(len(reductions)), key=lambda i: (abs(reductions[i] - stride), -i))
    try:
        model = timm.create_model(
            name, pretrained=pretrained, features_only=True, out_indices=(stage,), in_chans=in_chans
        )
    except Exception as err:  # download failures come in many types; name the fix
        raise ConfigError(
            f"could not load pretrained weights for {name!r} ({err}). Without network access pass a "
            "local weights file instead (--backbone-weights PATH) or train from scratch."
        ) from err
    return Backbone(_TimmStage(model), model.feature_info.channels()[-1], reductions[stage])


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ConfigError(f"{path}: weights file not found.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ConfigError(f"{path}: cannot read weights ({err}). Use a safetensors or torch state-dict file.") from err
    for key in ("state_dict", "model", "backbone"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: expected a state dict of tensors.")
    return state


def load_weights_file(module: nn.Module, path: Path) -> None:
    """Load a local weights file into `module`, matching keys up to common prefixes.

    A 3-channel first convolution is summed to 1 channel when the module is grayscale (and a 1-channel
    one repeated for RGB), as timm does for pretrained weights. Raises ConfigError when nothing matches.
    """
    state = _read_state_dict(path)
    target = module.state_dict()
    matched: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = _match_key(key, target)
        if name is None:
            continue
        want = target[name]
        if value.shape != want.shape and value.ndim == 4 and value.shape[0] == want.shape[0] and value.shape[2:] == want.shape[2:]:
            value = _adapt_in_channels(value, want.shape[1])
        if value.shape == want.shape:
            matched[name] = value
    if not matched:
        raise ConfigError(f"{path}: no tensor in this file matches the backbone; is it for another architecture?")
    missing = [name for name in target if name not in matched]
    if missing:  # e.g. weights of a shallower network (another stride): the rest stays randomly initialised
        log.warning("%s: %d of %d backbone tensors are not in this file and keep their random init (%s, ...); "
                    "check that width and stride match the weights", path, len(missing), len(target), missing[0])
    target.update(matched)
    module.load_state_dict(target)


def _match_key(key: str, target: dict) -> str | None:
    candidates = [key]
    for prefix in ("module.", "backbone.", "model.", "encoder."):
        if key.startswith(prefix):
            candidates.append(key[len(prefix):])
    for cand in list(candidates):
        candidates += [f"model.{cand}", f"module.{cand}"]
    return next((c for c in candidates if c in target), None)


def _adapt_in_channels(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    if weight.shape[1] == 1:
        return weight.repeat(1, in_chans, 1, 1) / in_chans
    return weight
