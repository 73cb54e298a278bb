"""A small fully convolutional network trained from scratch.

It plays the role of the deeper-FCDD paper's CNN27 baseline, sized for CPUs: a VGG-like stack of
3x3 convolutions with batch norm, halving the resolution `n_pools` times.
"""

from __future__ import annotations

from torch import nn


def _conv_block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    """VGG-style from-scratch feature extractor with output stride 2**n_pools.

    Stage i (0-based) has width * 2**i channels (capped at 8*width); the first stage has one conv,
    later stages two, so the receptive field grows quickly while the cost stays small.
    """

    def __init__(self, in_chans: int = 3, width: int = 16, n_pools: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_chans
        for stage in range(n_pools + 1):
            cout = width * min(2**stage, 8)
            layers += _conv_block(cin, cout)
            if stage > 0:
                layers += _conv_block(cout, cout)
            if stage < n_pools:
                layers.append(nn.MaxPool2d(2))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.out_channels = cin
        self.stride = 2**n_pools

    def forward(self, x):
        return self.features(x)
