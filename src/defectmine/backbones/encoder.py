"""What every multi-scale encoder shares: a list of feature maps out, and what each map is.

An encoder is one of our networks (`SmallCNN`, `GridViT`, a timm feature extractor) with `Encoder`
mixed in front, so it has exactly the submodules, parameter order and state-dict keys of the
single-map backbone of the same architecture: weights saved from one load into the other with
strict keys. Only ``forward`` differs: the backbone returns its last map, the encoder the list.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from defectmine.errors import ConfigError


class Encoder(nn.Module):
    """A multi-scale feature extractor: ``encoder(x)`` is a list of (N, C_i, H / r_i, W / r_i) maps.

    Attributes (one entry per returned map, shallow to deep, like timm's ``feature_info``):
        out_indices: the stage (or block) each map is taken after.
        channels: C_i, the channel count of map i (``feature_info.channels()``).
        reductions: r_i, its stride: input size / map size (``feature_info.reduction()``).

    Concrete encoders put this class first among their bases, in front of a network class that
    defines ``forward_stages(x) -> list[Tensor]`` and sets the three attributes.
    """

    out_indices: tuple[int, ...]
    channels: tuple[int, ...]
    reductions: tuple[int, ...]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_stages(x)


def check_out_indices(name: str, out_indices: Sequence[int], n_stages: int | None = None) -> tuple[int, ...]:
    """`out_indices` as a strictly increasing tuple of stage numbers, or a ConfigError naming the fix.

    n_stages: how many stages the architecture has (None: as many as asked for, e.g. the small CNN).
    """
    try:
        indices = tuple(int(i) for i in out_indices)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{name}: out_indices={out_indices!r} must be a sequence of stage numbers, e.g. (1, 2, 3)."
        ) from None
    limit = "" if n_stages is None else f" and below {n_stages}"
    if not indices or any(i < 0 or (n_stages is not None and i >= n_stages) for i in indices):
        raise ConfigError(
            f"{name}: out_indices={out_indices!r} must be non-empty stage numbers from 0{limit}. "
            f"Fix: pass e.g. out_indices=(0, 1, 2)."
        )
    if any(a >= b for a, b in zip(indices, indices[1:])):
        raise ConfigError(f"{name}: out_indices={out_indices!r} must be increasing without repeats, shallow to deep.")
    return indices
