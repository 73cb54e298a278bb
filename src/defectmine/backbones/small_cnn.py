"""A small fully convolutional network trained from scratch.

It plays the role of the deeper-FCDD paper's CNN27 baseline, sized for CPUs: a VGG-like stack of
3x3 convolutions with batch norm, halving the resolution `n_pools` times.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from defectmine.backbones.capacity import DEFAULT_DEPTH, DEFAULT_NORM, norm_layer
from defectmine.backbones.encoder import Encoder, check_out_indices


def _conv_block(cin: int, cout: int, norm: str) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), norm_layer(norm, cout), nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    """VGG-style from-scratch feature extractor with output stride 2**n_pools.

    Stage i (0-based) has width * 2**i channels (capped at 8*width) and stride 2**i; the first stage
    has one conv, later stages `depth` (default two), so the receptive field grows quickly while the
    cost stays small. Each conv is followed by batch norm (`norm="batch"`) or group norm ("group", see
    `capacity.group_norm`) and a ReLU.
    ``forward`` returns the last stage's map (N, out_channels, H / stride, W / stride);
    ``forward_stages`` the maps of the stages in `out_indices` (default: the last), each taken at the
    end of its stage, before the pooling that starts the next one.
    """

    def __init__(self, in_chans: int = 3, width: int = 16, n_pools: int = 3, out_indices: Sequence[int] | None = None,
                 *, depth: int = DEFAULT_DEPTH, norm: str = DEFAULT_NORM):
        super().__init__()
        # The layer list and its construction order are what saved weights and seeded runs depend on:
        # new attributes below are plain Python values, never parameters or buffers.
        layers: list[nn.Module] = []
        stage_channels, stage_ends = [], []
        cin = in_chans
        for stage in range(n_pools + 1):
            cout = width * min(2**stage, 8)
            layers += _conv_block(cin, cout, norm)
            for _ in range(depth - 1 if stage > 0 else 0):
                layers += _conv_block(cout, cout, norm)
            stage_channels.append(cout)
            stage_ends.append(len(layers) - 1)  # index of the stage's last ReLU
            if stage < n_pools:
                layers.append(nn.MaxPool2d(2))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.out_channels = cin
        self.stride = 2**n_pools
        indices = (n_pools,) if out_indices is None else check_out_indices("cnn", out_indices, n_pools + 1)
        self.out_indices = indices
        self.channels = tuple(stage_channels[i] for i in indices)
        self.reductions = tuple(2**i for i in indices)
        self._taps = {stage_ends[i] for i in indices}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The maps after the stages in `out_indices`, shallow to deep."""
        maps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self._taps:
                maps.append(x)  # safe to keep: the next layer (a pool or a conv) does not write in place
            if len(maps) == len(self._taps):
                break  # stages past the last tap (none when built by build_encoder) would be wasted work
        return maps


class CNNEncoder(Encoder, SmallCNN):
    """`SmallCNN` whose forward returns the list of stage maps (see `Encoder`); same weights and keys."""
