"""Loading local weights files (safetensors or torch state dicts) into backbones and encoders.

Our own self-supervised weights (``backbone.safetensors`` from `defectmine pretrain`) are the state
dict of a backbone; encoders of the same architecture have the same keys, so they load either way.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from defectmine.errors import ConfigError

log = logging.getLogger(__name__)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ConfigError(f"{path}: weights file not found.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ConfigError(f"{path}: cannot read weights ({err}). Use a safetensors or torch state-dict file.") from err
    for key in ("state_dict", "model", "backbone"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: expected a state dict of tensors.")
    return state


def load_weights_file(module: nn.Module, path: Path) -> None:
    """Load a local weights file into `module`, matching keys up to common prefixes.

    A 3-channel first convolution is summed to 1 channel when the module is grayscale (and a 1-channel
    one repeated for RGB), as timm does for pretrained weights. Raises ConfigError when nothing matches.
    """
    state = _read_state_dict(path)
    target = module.state_dict()
    matched: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = _match_key(key, target)
        if name is None:
            continue
        want = target[name]
        if value.shape != want.shape and value.ndim == 4 and value.shape[0] == want.shape[0] and value.shape[2:] == want.shape[2:]:
            value = _adapt_in_channels(value, want.shape[1])
        if value.shape == want.shape:
            matched[name] = value
    if not matched:
        raise ConfigError(f"{path}: no tensor in this file matches the backbone; is it for another architecture?")
    missing = [name for name in target if name not in matched]
    if missing:  # e.g. weights of a shallower network (another stride): the rest stays randomly initialised
        log.warning("%s: %d of %d backbone tensors are not in this file and keep their random init (%s, ...); "
                    "check that width and stride match the weights", path, len(missing), len(target), missing[0])
    target.update(matched)
    module.load_state_dict(target)


def _match_key(key: str, target: dict) -> str | None:
    candidates = [key]
    for prefix in ("module.", "backbone.", "model.", "encoder."):
        if key.startswith(prefix):
            candidates.append(key[len(prefix):])
    for cand in list(candidates):
        candidates += [f"model.{cand}", f"module.{cand}"]
    return next((c for c in candidates if c in target), None)


def _adapt_in_channels(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    if weight.shape[1] == 1:
        return weight.repeat(1, in_chans, 1, 1) / in_chans
    return weight
