"""timm models as backbones and encoders: a ``features_only`` model behind our two interfaces."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from defectmine.backbones.capacity import DEFAULT_NORM, batch_norms, group_norm
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


def timm_probe(name: str, in_chans: int) -> nn.Module:
    """timm model `name` with all its feature stages and default layers, randomly initialised: what
    `build_backbone` reads stage strides (``feature_info.reduction()``) and normalisation layers from."""
    import timm

    check_timm_name(name)
    try:
        return timm.create_model(name, pretrained=False, features_only=True, in_chans=in_chans)
    except RuntimeError as err:  # timm raises for models without feature extraction support
        raise ConfigError(f"backbone {name!r} cannot be used as a feature extractor: {err}") from err


def create_timm(
    name: str, in_chans: int, out_indices: Sequence[int] | None, *, pretrained: bool, encoder: bool,
    drop_path: float = 0.0, norm: str = DEFAULT_NORM,
) -> TimmFeatures:
    """timm model `name` with ``features_only=True`` as a `TimmEncoder` (encoder) or `TimmFeatures`.

    out_indices: stages to return (None: timm's default, usually all of them).
    drop_path: timm's ``drop_path_rate`` (stochastic depth); passed only when non-zero.
    norm: "batch" (the model's own layers) or "group": `capacity.group_norm` as timm's ``norm_layer``,
        which must replace every batch norm (ConfigError naming the backbone where it cannot).
    """
    import timm

    check_timm_name(name)
    kwargs = {} if out_indices is None else {"out_indices": tuple(out_indices)}
    if drop_path:
        kwargs["drop_path_rate"] = drop_path
    if norm == "group":
        kwargs["norm_layer"] = group_norm
    try:
        model = timm.create_model(name, pretrained=pretrained, features_only=True, in_chans=in_chans, **kwargs)
    except Exception as err:  # download failures come in many types; name the fix
        if pretrained:
            raise ConfigError(
                f"could not load pretrained weights for {name!r} ({err}). Without network access pass a "
                "local weights file instead (--backbone-weights PATH) or train from scratch."
            ) from err
        if norm == "group":  # models whose norm_layer is not a plain norm(channels) (efficientnet, inception_v3)
            raise _no_group_norm(name, err) from err
        if drop_path and "drop_path" in str(err):
            raise ConfigError(f"backbone {name!r} has no stochastic depth (drop_path={drop_path}). "
                              "Fix: drop_path=0, or a residual backbone such as resnet18.") from err
        raise ConfigError(
            f"backbone {name!r} cannot be built as a feature extractor with out_indices={out_indices!r} ({err}). "
            "Fix: pass stage numbers the model has (timm's feature_info lists them), or out_indices=None."
        ) from err
    if norm == "group" and batch_norms(model):
        raise _no_group_norm(name, "it keeps batch norm layers")
    return (TimmEncoder if encoder else TimmFeatures)(model)


def _no_group_norm(name: str, why: object) -> ConfigError:
    return ConfigError(f"backbone {name!r} cannot take group norm (norm='group': {why}). Fix: norm=batch, or a "
                       "backbone whose batch norms timm can replace, such as resnet18 or resnet34.")
