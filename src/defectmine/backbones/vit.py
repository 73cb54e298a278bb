"""A small Vision Transformer whose patch-token grid is the feature map.

Detectors such as FCDD need a spatial map (N, C, h, w); a ViT gives one when its patch tokens are put
back on their grid, so the patch size plays the role of the CNN's output stride. Positions use fixed
2-D sine-cosine embeddings (as in MAE), which have no learned size: the same weights run at any
image size whose sides are multiples of the patch size. There is no class token; detectors read the
token grid and MAE pretraining reconstructs from the tokens alone.

As an encoder (`ViTEncoder`) its stages are the transformer blocks: every returned map is a token
grid after one block, so all of them share the patch stride (there is no pyramid, unlike the CNNs).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.layers import build_sincos2d_pos_embed
from timm.models.vision_transformer import Block
from torch import nn

from defectmine.backbones.encoder import Encoder, check_out_indices
from defectmine.errors import DataError

# Depth and width sized for CPUs: about the training cost of the small CNN at the same stride and width.
VIT_DEPTH = 4
VIT_CHANNELS_PER_WIDTH = 8  # embed dim = 8 * width, the small CNN's channel count at stride 8
VIT_HEAD_DIM = 32


def sincos_positions(grid: tuple[int, int], dim: int, device: torch.device) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embeddings, (h*w, dim) in row-major grid order."""
    return build_sincos2d_pos_embed(list(grid), dim=dim, device=device)


class GridViT(nn.Module):
    """Patch embedding + transformer blocks; forward returns the token grid (N, dim, H/patch, W/patch).

    `encode(x, keep)` is the token-level entry MAE needs: it embeds all patches, keeps only the
    token positions in `keep` (N, L_keep) when given, and runs the blocks on those.
    `forward_stages(x)` returns the grids after the blocks in `out_indices` (default: the last), each
    through the final LayerNorm (as timm's ``forward_intermediates(norm=True)``), so the last one is
    exactly ``forward(x)``; all have stride `patch`.
    """

    def __init__(
        self, in_chans: int = 3, dim: int = 128, depth: int = VIT_DEPTH, patch: int = 8,
        out_indices: Sequence[int] | None = None,
    ):
        super().__init__()
        if dim % 4:
            raise ValueError(f"GridViT: dim={dim} must be a multiple of 4 (sine-cosine positions).")
        self.patch_embed = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)
        heads = max(1, dim // VIT_HEAD_DIM)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.out_channels = dim
        self.stride = patch
        # Plain Python values only: parameters, their order and keys stay those of the single-map ViT.
        indices = (depth - 1,) if out_indices is None else check_out_indices("vit_tiny", out_indices, depth)
        self.out_indices = indices
        self.channels = (dim,) * len(indices)
        self.reductions = (patch,) * len(indices)

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """The token grid for an input of this size; the sides must be multiples of the patch size."""
        if height % self.stride or width % self.stride:
            raise DataError(
                f"images of {height}x{width} pixels do not tile into {self.stride}x{self.stride} ViT patches. "
                f"Fix: use an image size that is a multiple of {self.stride} (the stride)."
            )
        return height // self.stride, width // self.stride

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens with positions, (N, h*w, dim)."""
        grid = self.grid_size(*x.shape[-2:])
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        return tokens + sincos_positions(grid, tokens.shape[-1], tokens.device).to(tokens.dtype)

    def encode(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Encoded tokens (N, L, dim): all of them, or the positions `keep` (N, L_keep) only."""
        tokens = self.embed(x)
        if keep is not None:
            tokens = torch.gather(tokens, 1, keep[..., None].expand(-1, -1, tokens.shape[-1]))
        return self.norm(self.blocks(tokens))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.grid_size(*x.shape[-2:])
        tokens = self.encode(x)
        return tokens.transpose(1, 2).reshape(len(x), -1, h, w)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Token grids (N, dim, H/patch, W/patch) after the blocks in `out_indices`, shallow to deep."""
        h, w = self.grid_size(*x.shape[-2:])
        tokens = self.embed(x)
        maps = []
        for index, block in enumerate(self.blocks):
            if index > self.out_indices[-1]:
                break
            tokens = block(tokens)
            if index in self.out_indices:
                maps.append(self.norm(tokens).transpose(1, 2).reshape(len(x), -1, h, w))
        return maps


class ViTEncoder(Encoder, GridViT):
    """`GridViT` whose forward returns the list of token grids (see `Encoder`); same weights and keys."""
