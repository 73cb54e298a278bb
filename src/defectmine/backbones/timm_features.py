"""timm models as backbones and encoders: a ``features_only`` model behind our two interfaces."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from defectmine.backbones.encoder import Encoder
from defectmine.errors import ConfigError

# Suggestions shown in errors and --help; any timm model with features_only support works.
SUGGESTED_TIMM = ("resnet18", "resnet34", "resnet101", "vgg16", "inception_v3", "efficientnet_b0")


class TimmFeatures(nn.Module):
    """A timm ``features_only`` model (attribute `model`); forward returns its last map, not a list.

    The timm model keeps only the layers up to its deepest `out_indices` stage, as timm builds it.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        info = model.feature_info
        self.out_indices = tuple(info.out_indices)
        self.channels = tuple(info.channels())
        self.reductions = tuple(info.reduction())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[-1]

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The maps of the stages in `out_indices`, shallow to deep."""
        return list(self.model(x))


class TimmEncoder(Encoder, TimmFeatures):
    """`TimmFeatures` whose forward returns the list of stage maps (see `Encoder`); same weights and keys."""


def check_timm_name(name: str) -> None:
    """A ConfigError naming the fix unless `name` is a timm model."""
    import timm

    if not timm.is_model(name):
        raise ConfigError(
            f"unknown backbone {name!r}: use 'cnn', 'vit_tiny' or a timm model name such as {', '.join(SUGGESTED_TIMM)}."
        )


def timm_reductions(name: str, in_chans: int) -> list[int]:
    """Strides of all feature stages of timm model `name` (builds a randomly initialised probe)."""
    import timm

    check_timm_name(name)
    try:
        probe = timm.create_model(name, pretrained=False, features_only=True, in_chans=in_chans)
    except RuntimeError as err:  # timm raises for models without feature extraction support
        raise ConfigError(f"backbone {name!r} cannot be used as a feature extractor: {err}") from err
    return probe.feature_info.reduction()


def create_timm(
    name: str, in_chans: int, out_indices: Sequence[int] | None, *, pretrained: bool, encoder: bool,
    drop_path: float = 0.0,
) -> TimmFeatures:
    """timm model `name` with ``features_only=True`` as a `TimmEncoder` (encoder) or `TimmFeatures`.

    out_indices: stages to return (None: timm's default, usually all of them).
    drop_path: timm's ``drop_path_rate`` (stochastic depth); passed only when non-zero.
    """
    import timm

    check_timm_name(name)
    kwargs = {} if out_indices is None else {"out_indices": tuple(out_indices)}
    if drop_path:
        kwargs["drop_path_rate"] = drop_path
    try:
        model = timm.create_model(name, pretrained=pretrained, features_only=True, in_chans=in_chans, **kwargs)
    except Exception as err:  # download failures come in many types; name the fix
        if pretrained:
            raise ConfigError(
                f"could not load pretrained weights for {name!r} ({err}). Without network access pass a "
                "local weights file instead (--backbone-weights PATH) or train from scratch."
            ) from err
        if drop_path and "drop_path" in str(err):
            raise ConfigError(f"backbone {name!r} has no stochastic depth (drop_path={drop_path}). "
                              "Fix: drop_path=0, or a residual backbone such as resnet18.") from err
        raise ConfigError(
            f"backbone {name!r} cannot be built as a feature extractor with out_indices={out_indices!r} ({err}). "
            "Fix: pass stage numbers the model has (timm's feature_info lists them), or out_indices=None."
        ) from err
    return (TimmEncoder if encoder else TimmFeatures)(model)
