"""U-Net segmenter: smp's U-Net over the DLI paper's lightweight ℓ-encoders or our small CNN."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from defectmine.data.images import ImageSpec
from defectmine.segment.config import SegmenterConfig
from defectmine.segment.networks import DEFAULT_DEPTH, build_unet, check_encoder
from defectmine.segment.segmenter import Segmenter


@dataclass
class UNetConfig(SegmenterConfig):
    """Hyperparameters of the U-Net segmenter (the fields of `SegmenterConfig`, and):

    encoder: "resnet18", "mobileone_s1", "resnest50d" (the paper's ℓ-encoders) or another timm name,
        or "cnn" (our small CNN, which our self-supervised weights can initialise).
    encoder_weights: None (random init, the default), "pretrained" (timm's ImageNet weights; needs
        network) or a local weights file for the encoder (safetensors or torch state dict), e.g. the
        backbone.safetensors written by `defectmine pretrain`.
    encoder_depth: encoder stages (features at strides 2 .. 2**depth); 3 is the paper's ℓ-encoder
        (five stages less the last two). Image sides must be multiples of 2**depth.
    decoder_channels: channels of each decoder block, deepest first; None: (128, 64, 32) at depth 3,
        halving per block.
    width: base channel count of "cnn" (stage i has width * 2**i channels); match the pretrained
        weights' width. Ignored by timm encoders.
    """

    segmenter_name: ClassVar[str] = "unet"
    weight_options: ClassVar[tuple[str, ...]] = ("encoder_weights",)

    encoder: str = "resnet18"
    encoder_weights: str | None = None
    encoder_depth: int = DEFAULT_DEPTH
    decoder_channels: list[int] | None = None
    width: int = 8

    def __post_init__(self):
        super().__post_init__()
        check_encoder(self.encoder, self.encoder_depth, self.decoder_channels, self.encoder_weights)


class UNet(Segmenter):
    """U-Net segmenter: ``UNet(encoder="mobileone_s1", loss="focal").fit(train, val=val).predict(test)``."""

    name = "unet"
    Config = UNetConfig

    def _build_network(self, spec: ImageSpec, n_classes: int) -> nn.Module:
        cfg = self.config
        return build_unet(
            cfg.encoder, n_classes, spec.channels, depth=cfg.encoder_depth, decoder_channels=cfg.decoder_channels,
            width=cfg.width, weights=cfg.encoder_weights,
        )

    def _summary(self) -> str:
        return f"{self.config.encoder}, {self.config.loss}"
