"""What every detector shares: the fit/score/save/load contract and saving as JSON config +
safetensors weights (never pickles). `Scores` lives in `core.results`; it is re-exported here."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from defectmine import __version__
from defectmine.core.results import Scores
from defectmine.data.dataset import ImageDataset
from defectmine.data.images import ImageSpec
from defectmine.errors import ConfigError, DataError, NotFittedError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

__all__ = ["CONFIG_FILE", "WEIGHTS_FILE", "Detector", "Scores", "resolve_device", "seed_everything"]


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' picks CUDA when present, else CPU; 'cpu', 'cuda', 'cuda:1' are taken as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ConfigError(f"device={device!r}: {err}. Use 'auto', 'cpu' or 'cuda'.") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} but CUDA is not available here: use --device cpu or auto.")
    return resolved


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so that runs repeat."""
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Detector(ABC):
    """Base class of all detectors (sklearn vocabulary).

    ``__init__`` only stores hyperparameters in ``self.config`` (a dataclass of type ``Config``),
    ``fit`` returns ``self``, learned state lives in attributes ending in ``_``.
    Subclasses set ``name``, ``Config`` and implement ``fit``, ``score``, ``_build_network`` and
    (optionally) ``_extra_state`` / ``_set_extra_state`` for non-tensor learned state.
    """

    name: ClassVar[str]
    Config: ClassVar[type]

    def __init__(self, **params: Any):
        known = {f.name for f in fields(self.Config)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ConfigError(
                f"{self.name}: unknown option(s) {', '.join(unknown)}; known options: {', '.join(sorted(known))}."
            )
        self.config = self.Config(**params)
        self.network_: nn.Module | None = None
        self.spec_: ImageSpec | None = None

    # -- contract -----------------------------------------------------------------------------
    @abstractmethod
    def fit(self, normal: ImageDataset, anomalous: ImageDataset | None = None, *, val: ImageDataset | None = None):
        """Learn from normal images and, when given, labelled anomalous images. Returns self."""

    @abstractmethod
    def score(self, images: ImageDataset | torch.Tensor) -> Scores:
        """Anomaly scores (and maps) for a dataset or a uint8 tensor (N, C, H, W) at the training spec."""

    @abstractmethod
    def _build_network(self, spec: ImageSpec) -> nn.Module:
        """The untrained torch module for this configuration and input spec."""

    def get_config(self) -> dict:
        """The keyword arguments that rebuild this detector."""
        return asdict(self.config)

    # -- shared helpers ------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return resolve_device(getattr(self.config, "device", "auto"))

    def _check_fitted(self) -> None:
        if self.network_ is None or self.spec_ is None:
            raise NotFittedError(f"{self.name}: call fit(...) or load(...) before score(...).")

    def _as_uint8_batch(self, images: ImageDataset | torch.Tensor) -> torch.Tensor:
        """The uint8 (N, C, H, W) pixels to score, checked against the training spec."""
        self._check_fitted()
        if isinstance(images, ImageDataset):
            if images.spec != self.spec_:
                raise DataError(
                    f"{self.name}: images were prepared with {images.spec} but the model was trained with "
                    f"{self.spec_}; load them with the model's image spec."
                )
            return images.raw_images()
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.dtype != torch.uint8:
            raise DataError(f"{self.name}: score() takes an ImageDataset or a uint8 tensor (N, C, H, W).")
        expected = (self.spec_.channels, *self.spec_.size)
        if tuple(images.shape[1:]) != expected:
            raise DataError(f"{self.name}: tensor of shape {tuple(images.shape[1:])}, expected {expected}.")
        return images

    def _extra_state(self) -> dict:
        return {}

    def _set_extra_state(self, state: dict) -> None:
        pass

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into the folder `path`."""
        from safetensors.torch import save_file

        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        document = {
            "detector": self.name,
            "defectmine_version": __version__,
            "config": self.get_config(),
            "spec": self.spec_.to_dict(),
            "state": self._extra_state(),
        }
        (path / CONFIG_FILE).write_text(json.dumps(document, indent=2))
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.network_.state_dict().items()}
        save_file(tensors, str(path / WEIGHTS_FILE))
        return path

    @classmethod
    def load(cls, path: Path) -> "Detector":
        """Rebuild a detector saved with ``save`` (weights on the configured device)."""
        from safetensors.torch import load_file

        path = Path(path)
        config_path = path / CONFIG_FILE
        if not config_path.is_file() or not (path / WEIGHTS_FILE).is_file():
            raise DataError(f"{path}: not a saved model folder (expected {CONFIG_FILE} and {WEIGHTS_FILE}).")
        document = json.loads(config_path.read_text())
        if document.get("detector") != cls.name:
            raise DataError(f"{path}: holds a {document.get('detector')!r} model, not {cls.name!r}.")
        params = dict(document["config"])
        # The weights come from the file; never re-load (or download) backbone weights.
        if "backbone_weights" in params:
            params["backbone_weights"] = None
        detector = cls(**params)
        detector.spec_ = ImageSpec.from_dict(document["spec"])
        network = detector._build_network(detector.spec_)
        network.load_state_dict(load_file(str(path / WEIGHTS_FILE)))
        detector.network_ = network.to(detector.device, memory_format=torch.channels_last).eval()
        detector._set_extra_state(document.get("state", {}))
        return detector
