"""The self-supervised pretraining methods, chosen by name through `METHODS`.

Each method is a small nn.Module that holds the backbone being pretrained (attribute `backbone`, the
very module `build_backbone` returns, so its state dict is what detectors load) plus the parts that
are thrown away afterwards (decoder, projector), and a `loss(pixels, generator)` on a uint8 batch.

    mim      masked image modelling for any backbone with a spatial map (SimMIM recipe on a CNN)
    mae      masked autoencoder on the `vit_tiny` backbone (He et al., 2022)
    simsiam  siamese self-distillation of augmented views (Chen & He, 2021)
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from defectmine.backbones import Backbone
from defectmine.backbones.factory import GRID_VIT, SMALL_CNN
from defectmine.backbones.vit import VIT_HEAD_DIM, GridViT, sincos_positions
from defectmine.data.images import ImageSpec, normalise
from defectmine.errors import ConfigError, lookup
from defectmine.pretrain.augment import patch_mask, random_masking, siamese_view


class PretrainMethod(nn.Module):
    """Base of the methods: `backbone` (kept) + method parts (discarded), and the loss on a uint8 batch."""

    name: ClassVar[str]
    default_backbone: ClassVar[str] = SMALL_CNN
    default_lr: ClassVar[float] = 1e-3
    weight_decay: ClassVar[float] = 0.05

    def __init__(self, backbone: Backbone, spec: ImageSpec):
        super().__init__()
        self.backbone = backbone.module
        self.feature_channels = backbone.out_channels
        self.feature_stride = backbone.stride
        self.spec = spec

    def inputs(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised float images, channels_last (faster convolutions on CPU)."""
        return normalise(pixels, self.spec).contiguous(memory_format=torch.channels_last)

    def loss(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Scalar loss of a uint8 batch (B, C, H, W); random draws come from `generator`."""
        raise NotImplementedError

    def recipe(self) -> dict:
        """The method's hyperparameters, recorded in pretrain.json."""
        raise NotImplementedError


def _masked_mean(errors: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """Mean of `errors` over hidden positions only (broadcast over the other dimensions)."""
    hidden = hidden.expand_as(errors).to(errors.dtype)
    return (errors * hidden).sum() / hidden.sum().clamp(min=1.0)


class MaskedImageModel(PretrainMethod):
    """SimMIM for CNNs: hide random square patches of the input (set to 0, the normalised mean), let the
    backbone and a linear decoder (1x1 convolution + pixel shuffle back to full resolution) predict
    the pixels, L1 loss on the hidden pixels only.

    Mask patches are twice the backbone stride (16 px at stride 8): large enough that a hidden patch
    cannot be filled in from its immediate neighbours, SimMIM's finding.
    """

    name = "mim"
    mask_ratio = 0.6

    def __init__(self, backbone: Backbone, spec: ImageSpec):
        super().__init__(backbone, spec)
        stride = self.feature_stride
        self.mask_patch = max(1, min(2 * stride, min(spec.size) // 2))
        self.decoder = nn.Sequential(
            nn.Conv2d(self.feature_channels, stride * stride * spec.channels, kernel_size=1), nn.PixelShuffle(stride)
        )

    def loss(self, pixels, generator):
        images = self.inputs(pixels)
        hidden = patch_mask(len(images), self.spec.size, self.mask_patch, self.mask_ratio, generator).to(images.device)
        prediction = self.decoder(self.backbone(images.masked_fill(hidden, 0.0)))
        # Sides that are not multiples of the stride lose their last pixels in the backbone's pooling.
        height, width = prediction.shape[-2:]
        errors = (prediction - images[..., :height, :width]).abs()
        return _masked_mean(errors, hidden[..., :height, :width])

    def recipe(self):
        return {
            "mask_ratio": self.mask_ratio, "mask_patch_px": self.mask_patch, "mask_value": "0 (normalised mean)",
            "decoder": f"1x1 conv {self.feature_channels}->{self.feature_stride ** 2 * self.spec.channels} "
                       f"+ pixel shuffle x{self.feature_stride}",
            "loss": "L1 on normalised pixels of hidden patches",
        }


class MaskedAutoencoder(PretrainMethod):
    """MAE on the `vit_tiny` backbone: hide 75% of the patch tokens, encode only the visible ones, a
    light transformer decoder (2 blocks, half the width) fills in mask tokens, MSE on the per-patch
    normalised pixels of the hidden patches (MAE's norm_pix_loss).
    """

    name = "mae"
    default_backbone = GRID_VIT
    mask_ratio = 0.75
    decoder_depth = 2

    def __init__(self, backbone: Backbone, spec: ImageSpec):
        super().__init__(backbone, spec)
        if not isinstance(self.backbone, GridViT):
            raise ConfigError(
                f"method 'mae' needs a ViT backbone; got a {type(self.backbone).__name__}. "
                f"Fix: use backbone '{GRID_VIT}', or method 'mim' for CNNs."
            )
        dim = self.feature_channels
        self.decoder_dim = max(32, dim // 2 // 4 * 4)  # sine-cosine positions need a multiple of 4
        self.to_decoder = nn.Linear(dim, self.decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, self.decoder_dim))
        nn.init.normal_(self.mask_token, std=0.02)
        heads = max(1, self.decoder_dim // VIT_HEAD_DIM)
        self.decoder = nn.Sequential(
            *[Block(self.decoder_dim, heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(self.decoder_depth)]
        )
        self.decoder_norm = nn.LayerNorm(self.decoder_dim)
        self.head = nn.Linear(self.decoder_dim, self.feature_stride ** 2 * spec.channels)

    def loss(self, pixels, generator):
        images = normalise(pixels, self.spec)
        grid = self.backbone.grid_size(*images.shape[-2:])
        n_tokens = grid[0] * grid[1]
        keep, hidden = random_masking(len(images), n_tokens, self.mask_ratio, generator)
        keep, hidden = keep.to(images.device), hidden.to(images.device)
        visible = self.to_decoder(self.backbone.encode(images, keep))
        tokens = self.mask_token.expand(len(images), n_tokens, -1)
        tokens = tokens.scatter(1, keep[..., None].expand(-1, -1, self.decoder_dim), visible)
        tokens = tokens + sincos_positions(grid, self.decoder_dim, tokens.device)
        prediction = self.head(self.decoder_norm(self.decoder(tokens)))
        # (N, C*p*p, L) -> (N, L, C*p*p): patch order matches the token order (row-major).
        target = F.unfold(images, kernel_size=self.feature_stride, stride=self.feature_stride).transpose(1, 2)
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
        return _masked_mean((prediction - target).pow(2).mean(-1), hidden)

    def recipe(self):
        return {
            "mask_ratio": self.mask_ratio, "mask_patch_px": self.feature_stride,
            "decoder": f"{self.decoder_depth} transformer blocks of width {self.decoder_dim}, linear to pixels",
            "loss": "MSE on per-patch normalised pixels of hidden patches",
        }


class SimSiam(PretrainMethod):
    """SimSiam: two random views per image (resized crop of 30-100% of the area, flips, brightness and
    contrast +-40%, Gaussian blur sigma 0.1-2 px with probability 1/2); backbone -> global average
    pool -> 3-layer projector -> 2-layer predictor; loss = -cosine(predictor(z1), stop-grad(z2)),
    symmetrised. Views go through the network one at a time so batch norm never mixes them.
    """

    name = "simsiam"
    weight_decay = 1e-4
    projection_dim = 256
    prediction_dim = 64

    def __init__(self, backbone: Backbone, spec: ImageSpec):
        super().__init__(backbone, spec)
        dim, hidden = self.projection_dim, self.prediction_dim
        self.projector = nn.Sequential(
            nn.Linear(self.feature_channels, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(inplace=True),
            nn.Linear(dim, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(inplace=True),
            nn.Linear(dim, dim, bias=False), nn.BatchNorm1d(dim, affine=False),
        )
        self.predictor = nn.Sequential(
            nn.Linear(dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim)
        )

    def loss(self, pixels, generator):
        projections = [
            self.projector(self.backbone(self.inputs(siamese_view(pixels, generator))).mean(dim=(2, 3)))
            for _ in range(2)
        ]
        z1, z2 = projections
        p1, p2 = self.predictor(z1), self.predictor(z2)
        return -(F.cosine_similarity(p1, z2.detach()).mean() + F.cosine_similarity(p2, z1.detach()).mean()) / 2

    def recipe(self):
        return {
            "augmentations": "resized crop (area 0.3-1, aspect 3/4-4/3), h/v flips, brightness and contrast "
                             "x[0.6, 1.4] (p=0.8), Gaussian blur sigma 0.1-2 px (p=0.5)",
            "projector": f"3-layer MLP {self.feature_channels}->{self.projection_dim} with batch norm",
            "predictor": f"2-layer MLP {self.projection_dim}->{self.prediction_dim}->{self.projection_dim}",
            "loss": "negative cosine similarity, stop-gradient, symmetrised",
        }


METHODS: dict[str, type[PretrainMethod]] = {
    MaskedImageModel.name: MaskedImageModel,
    MaskedAutoencoder.name: MaskedAutoencoder,
    SimSiam.name: SimSiam,
}


def method_class(name: str) -> type[PretrainMethod]:
    """The method registered under `name`; ConfigError listing the known ones otherwise."""
    return lookup(METHODS, name, "pretraining method")
