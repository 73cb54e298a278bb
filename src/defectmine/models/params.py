"""Checking detector options against the types their config dataclass declares, so that `-p lr=abc`
or `-p epochs=2.5` fails at once with one line instead of deep inside training."""

from __future__ import annotations

import math
import types
import typing
from dataclasses import MISSING, fields
from typing import Any

from defectmine.errors import ConfigError

_NAMES = {int: "a whole number", float: "a number", str: "a text", bool: "true or false", dict: "a JSON object",
          list: "a JSON list", type(None): "null"}


def _accepts(kind: Any, value: Any) -> bool:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(k, value) for k in typing.get_args(kind))
    if origin is not None:  # list[float], dict[str, Any]: check the container only
        kind = origin
    if kind is Any:
        return True
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, kind) if isinstance(kind, type) else True


def _describe(kind: Any) -> str:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(k) for k in typing.get_args(kind))
    return _NAMES.get(origin or kind, getattr(kind, "__name__", str(kind)))


def check_param_types(detector: str, config_class: type, params: dict) -> None:
    """Raise ConfigError naming the first option whose value does not have its declared type."""
    hints = typing.get_type_hints(config_class)
    for f in fields(config_class):
        if f.name in params and f.name in hints and not _accepts(hints[f.name], params[f.name]):
            value = params[f.name]
            default = f.default_factory() if f.default is MISSING and f.default_factory is not MISSING else f.default
            example = "..." if default is None or default is MISSING else str(default).lower() if isinstance(default, bool) else default
            raise ConfigError(
                f"{detector}: option {f.name}={value!r} must be {_describe(hints[f.name])} "
                f"(default {default!r}). Fix: e.g. -p {f.name}={example}."
            )


def build_config(owner: str, config_class: type, params: dict):
    """`config_class(**params)` after naming unknown options and checking the known ones' types, so a
    typo or `-p lr=abc` fails in one line (detectors and segmenters both build their config here)."""
    known = {f.name for f in fields(config_class)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(
            f"{owner}: unknown option(s) {', '.join(unknown)}; known options: {', '.join(sorted(known))}."
        )
    check_param_types(owner, config_class, params)
    return config_class(**params)
