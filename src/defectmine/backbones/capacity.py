"""Capacity levers of the backbones: convolutions per stage of the small CNN (`depth`), the normalisation
layer (`norm`: batch or group norm) and the momentum of batch norm's running statistics (`bn_momentum`).

`check_capacity` is the one check of the three values (detector configs call it at construction,
`build_backbone` again); `group_norm` is the group-norm layer both the small CNN and timm models get;
`set_bn_momentum` sets the momentum after a network is built (momentum is no parameter or buffer, so
saved weights do not change with it).
"""

from __future__ import annotations

from torch import nn

from defectmine.errors import ConfigError

#: Defaults: what every backbone was before these levers existed (saved models and seeded runs keep them).
DEFAULT_DEPTH = 2
DEFAULT_NORM = "batch"
NORMS = ("batch", "group")
CAPACITY_DEFAULTS = {"depth": DEFAULT_DEPTH, "norm": DEFAULT_NORM, "bn_momentum": None}
#: Most groups per group-norm layer (Wu & He use 32 for ResNets; our small CNN's stages are 4 to 64 wide).
MAX_GROUPS = 8


def norm_groups(channels: int) -> int:
    """Groups of a group-norm layer over `channels`: the largest divisor of `channels` not above
    `MAX_GROUPS` (GroupNorm needs a divisor; 8 for every power-of-two width from 8 up)."""
    return next(g for g in range(min(MAX_GROUPS, channels), 0, -1) if channels % g == 0)


def group_norm(num_channels: int, **factory) -> nn.GroupNorm:
    """``nn.GroupNorm(norm_groups(c), c)``: the `norm_layer` given to timm for norm="group" (timm may
    pass device / dtype keywords, forwarded here)."""
    return nn.GroupNorm(norm_groups(num_channels), num_channels, **factory)


def norm_layer(norm: str, channels: int) -> nn.Module:
    """The normalisation layer of the small CNN: BatchNorm2d ("batch") or `group_norm` ("group")."""
    return nn.BatchNorm2d(channels) if norm == "batch" else group_norm(channels)


def batch_norms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every batch-norm layer of `module` (timm's BatchNormAct2d included: it subclasses BatchNorm2d)."""
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def set_bn_momentum(module: nn.Module, momentum: float, name: str) -> None:
    """Set the running-statistics momentum of every batch-norm layer of backbone `name`; ConfigError when
    it has none (a lever that changes nothing should not pass silently)."""
    layers = batch_norms(module)
    if not layers:
        raise ConfigError(f"bn_momentum={momentum}: backbone {name!r} has no batch norm. Fix: bn_momentum=null "
                          "(or a backbone with batch norm such as cnn or resnet18).")
    for layer in layers:
        layer.momentum = momentum


def check_capacity(
    backbone: str, *, depth: int = DEFAULT_DEPTH, norm: str = DEFAULT_NORM, bn_momentum: float | None = None,
    weights: object = None, owner: str = "backbone", drop_path: float = 0.0,
) -> None:
    """ConfigError (one line, starting with `owner`) for a bad `depth`, `norm`, `bn_momentum` or
    `drop_path` of `backbone`.

    depth: convolutions per stage after the first of the "cnn" backbone (an integer >= 1); other
        backbones have their own layers and take only the default 2.
    norm: "batch" or "group"; "group" is refused for "vit_tiny" (layer norm) and with timm's published
        weights (trained with batch norm).
    bn_momentum: None (torch's 0.1) or a value in (0, 1]; refused with norm="group" and for "vit_tiny".
    drop_path: stochastic depth rate in [0, 1); non-zero only for timm models with residual blocks.
    """
    from defectmine.backbones.factory import GRID_VIT, OWN_BACKBONES, SMALL_CNN

    if not 0 <= drop_path < 1:
        raise ConfigError(f"{owner}: drop_path={drop_path} must be in [0, 1).")
    if drop_path and backbone in OWN_BACKBONES:
        raise ConfigError(f"{owner}: drop_path={drop_path} needs a timm backbone with residual blocks "
                          f"(e.g. resnet18); backbone {backbone!r} has none. Fix: drop_path=0.")

    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ConfigError(f"{owner}: depth={depth!r} must be a whole number >= 1 (convolutions per stage of the "
                          f"'cnn' backbone). Fix: e.g. depth=3, or depth={DEFAULT_DEPTH} (the default).")
    if depth != DEFAULT_DEPTH and backbone != SMALL_CNN:
        raise ConfigError(f"{owner}: depth={depth} only applies to the 'cnn' backbone; {backbone!r} has its own "
                          f"layers. Fix: depth={DEFAULT_DEPTH} (the default), or backbone=cnn.")
    if norm not in NORMS:
        raise ConfigError(f"{owner}: norm={norm!r} is unknown. Fix: use one of {', '.join(NORMS)}.")
    if norm == "group" and backbone == GRID_VIT:
        raise ConfigError(f"{owner}: norm='group' does not apply to {GRID_VIT!r} (it uses layer norm). "
                          "Fix: norm=batch.")
    if norm == "group" and weights == "pretrained":
        raise ConfigError(f"{owner}: norm='group' cannot load timm's published weights (trained with batch norm). "
                          "Fix: norm=batch, or train from scratch (no backbone_weights).")
    if bn_momentum is None:
        return
    if isinstance(bn_momentum, bool) or not isinstance(bn_momentum, (int, float)) or not 0 < bn_momentum <= 1:
        raise ConfigError(f"{owner}: bn_momentum={bn_momentum!r} must be in (0, 1], e.g. 0.01, or null "
                          "(torch's 0.1).")
    if norm != "batch":
        raise ConfigError(f"{owner}: bn_momentum={bn_momentum} needs batch norm; norm={norm!r} has none. "
                          "Fix: bn_momentum=null, or norm=batch.")
    if backbone == GRID_VIT:
        raise ConfigError(f"{owner}: bn_momentum={bn_momentum}: {GRID_VIT!r} has no batch norm. Fix: bn_momentum=null.")
