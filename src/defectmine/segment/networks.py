"""U-Nets for segmenters: segmentation-models-pytorch's U-Net decoder and head over a lightweight encoder.

The DLI paper's "ℓ-encoders" are timm encoders with their last two stages removed (Caruso et al. 2024:
ℓ-ResNest50d 1.6M, ℓ-ResNet18 0.7M, ℓ-MobileoneS1 0.3M encoder parameters). smp's timm universal
encoder (``tu-<name>``) counts five stages (strides 2 to 32) for every timm model, so the ℓ-encoder is
``encoder_depth=3``: features at strides 2, 4 and 8, decoded by three blocks of (128, 64, 32) channels
as in the authors' code. Our small CNN ("cnn", `defectmine.backbones`) plugs into the same decoder
through `CNNFeatures`, so that self-supervised weights from `defectmine pretrain` can initialise it.

`build_unet` returns a module whose forward maps (N, in_chans, H, W) to logits (N, n_classes, H, W);
H and W must be multiples of 2**depth. Weights are never downloaded unless asked for ("pretrained",
timm encoders only); a local weights file (safetensors or torch state dict) initialises the encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from defectmine.backbones import build_encoder, load_weights_file
from defectmine.backbones.factory import GRID_VIT, SMALL_CNN
from defectmine.backbones.timm_features import check_timm_name
from defectmine.errors import ConfigError

# The paper's three ℓ-encoders and ours; any timm model with five feature stages works too.
SUGGESTED_ENCODERS = ("resnet18", "mobileone_s1", "resnest50d", SMALL_CNN)
# Five stages less the last two (timm encoders); for "cnn" the depth is its number of poolings.
DEFAULT_DEPTH = 3
MAX_DEPTH = 5
# Channels of the last (full-resolution) decoder block; each deeper block doubles them.
_DECODER_LAST = 32


def default_decoder_channels(depth: int) -> tuple[int, ...]:
    """(128, 64, 32) at depth 3: the deepest block has 32 * 2**(depth - 1) channels, each later one half."""
    return tuple(_DECODER_LAST * 2 ** (depth - 1 - i) for i in range(depth))


def check_encoder(name: str, depth: int, decoder_channels: Sequence[int] | None, weights: str | None) -> None:
    """ConfigError naming the fix for an encoder, depth, decoder or weights that cannot build a U-Net."""
    if name == GRID_VIT:
        raise ConfigError(
            f"encoder {name!r} has no feature pyramid (every map has the patch stride), which a U-Net needs. "
            f"Fix: use one of {', '.join(SUGGESTED_ENCODERS)}."
        )
    if name != SMALL_CNN:
        try:
            check_timm_name(name)
        except ConfigError:
            raise ConfigError(
                f"unknown encoder {name!r}. Fix: use 'cnn' or a timm model name such as "
                f"{', '.join(n for n in SUGGESTED_ENCODERS if n != SMALL_CNN)}."
            ) from None
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_DEPTH:
        raise ConfigError(
            f"encoder_depth={depth!r} must be a whole number from 1 to {MAX_DEPTH} (default {DEFAULT_DEPTH})."
        )
    if decoder_channels is not None:
        channels = list(decoder_channels)
        valid = all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in channels)
        if len(channels) != depth or not valid:
            raise ConfigError(
                f"decoder_channels={channels!r} must be {depth} positive whole numbers, one per decoder block "
                f"(encoder_depth={depth}), e.g. {list(default_decoder_channels(depth))}."
            )
    if weights == "pretrained" and name == SMALL_CNN:
        raise ConfigError(
            f"encoder {name!r} has no published weights. Fix: pass a local weights file (e.g. the "
            "backbone.safetensors of `defectmine pretrain`) or none."
        )


class CNNFeatures(nn.Module):
    """Our small CNN as an smp encoder: forward returns [x, maps at strides 2, 4, ..., 2**depth].

    The input leads the list as in smp's encoders (the decoder reads only its size). `out_channels`
    lists the channel count of each entry.
    """

    def __init__(self, in_chans: int, depth: int, width: int, weights: str | Path | None):
        super().__init__()
        stages = tuple(range(1, depth + 1))  # stage i has stride 2**i; stage 0 (stride 1) feeds stage 1 only
        self.cnn = build_encoder(SMALL_CNN, in_chans, out_indices=stages, width=width, weights=weights)
        self.out_channels = [in_chans, *self.cnn.channels]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x, *self.cnn(x)]


def _timm_encoder(name: str, in_chans: int, depth: int, weights: str | Path | None) -> nn.Module:
    from segmentation_models_pytorch.encoders import get_encoder

    try:
        encoder = get_encoder(f"tu-{name}", in_channels=in_chans, depth=depth,
                              weights=True if weights == "pretrained" else None)
    except Exception as err:  # download failures and unsupported stage layouts come in many types
        if weights == "pretrained":
            raise ConfigError(
                f"could not load pretrained weights for encoder {name!r} ({err}). Without network access pass a "
                "local weights file instead, or train from scratch (encoder_weights=None)."
            ) from err
        raise ConfigError(
            f"encoder {name!r} cannot feed a U-Net at encoder_depth={depth} ({err}). Fix: use one of "
            f"{', '.join(SUGGESTED_ENCODERS)} or another depth."
        ) from err
    if weights not in (None, "pretrained"):
        # timm state dicts ("conv1.weight") and our saved backbones ("model.conv1.weight") both match
        # the universal encoder's "model." keys (load_weights_file tries the prefixes).
        load_weights_file(encoder, Path(weights))
    return encoder


class SegmentationUNet(nn.Module):
    """Encoder -> smp's U-Net decoder -> 3x3 convolution to one logit per defect class.

    Submodules are named as in ``smp.Unet`` (encoder, decoder, segmentation_head) and, for timm
    encoders, hold the same layers, so state dicts carry over.
    """

    def __init__(self, encoder: nn.Module, decoder_channels: Sequence[int], n_classes: int):
        super().__init__()
        from segmentation_models_pytorch.base import SegmentationHead
        from segmentation_models_pytorch.base.initialization import initialize_decoder, initialize_head
        from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder

        self.encoder = encoder
        self.decoder = UnetDecoder(list(encoder.out_channels), list(decoder_channels), len(decoder_channels))
        self.segmentation_head = SegmentationHead(decoder_channels[-1], n_classes, kernel_size=3)
        initialize_decoder(self.decoder)
        initialize_head(self.segmentation_head)
        self.stride = 2 ** len(decoder_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.segmentation_head(self.decoder(self.encoder(x)))


def build_unet(
    encoder: str,
    n_classes: int,
    in_chans: int = 3,
    *,
    depth: int | None = None,
    decoder_channels: Sequence[int] | None = None,
    width: int = 8,
    weights: str | Path | None = None,
) -> SegmentationUNet:
    """A U-Net with `n_classes` output logits (one sigmoid per defect class).

    Args:
        encoder: "cnn" (our small CNN) or a timm name ("resnet18", "mobileone_s1", "resnest50d", ...).
        n_classes: defect classes C (the background is no output: all sigmoids off).
        in_chans: 1 (grayscale) or 3 (RGB).
        depth: encoder stages (strides 2 .. 2**depth); default 3, the paper's ℓ-encoders.
        decoder_channels: one per decoder block, deepest first; default (128, 64, 32) at depth 3.
        width: base channel count of "cnn" (its stages have width * 2**i channels); ignored otherwise.
        weights: None (random init), "pretrained" (timm's published weights; needs network) or a local
            weights file for the encoder, e.g. the backbone.safetensors of `defectmine pretrain`.
    """
    depth = DEFAULT_DEPTH if depth is None else depth
    check_encoder(encoder, depth, decoder_channels, None if weights is None else str(weights))
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 1:
        raise ConfigError(f"n_classes={n_classes!r}: a segmenter needs at least one defect class.")
    channels = tuple(decoder_channels) if decoder_channels is not None else default_decoder_channels(depth)
    if encoder == SMALL_CNN:
        features = CNNFeatures(in_chans, depth, width, weights)
    else:
        features = _timm_encoder(encoder, in_chans, depth, weights)
    return SegmentationUNet(features, channels, n_classes)
