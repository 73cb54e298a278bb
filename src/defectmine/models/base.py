"""What every detector shares: the fit/score/save/load contract and saving as JSON config +
safetensors weights (never pickles). `Scores` lives in `core.results`; it is re-exported here."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import asdict
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
from defectmine.models.params import build_config

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
        self.config = build_config(self.name, self.Config, params)
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

    # Save and load go through these three; a detector made of several networks (a seed ensemble)
    # overrides them, single-network detectors only implement the methods they call.
    def _build_model(self, spec: ImageSpec) -> nn.Module:
        return self._build_network(spec)

    def _saved_state(self) -> dict:
        return self._extra_state()

    def _restore_saved_state(self, state: dict) -> None:
        self._set_extra_state(state)

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: Path, *, metadata: dict | None = None) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into the folder `path`.

        `metadata` (JSON-ready) is stored as it is in config.json, e.g. the fingerprint of the run
        that fitted this model.
        """
        self._check_fitted()
        return write_model_folder(path, self.network_, {
            "detector": self.name, "config": self.get_config(), "spec": self.spec_.to_dict(),
            "state": self._saved_state(), "metadata": dict(metadata or {}),
        })

    @classmethod
    def load(cls, path: Path) -> "Detector":
        """Rebuild a detector saved with ``save`` (weights on the configured device).

        Every way a model folder can be broken (missing folder or file, invalid or incomplete
        config.json, empty or truncated weights, weights of another shape) raises one DataError naming
        the file, never a traceback from inside safetensors or torch.
        """
        path = Path(path)
        document = read_model_document(path)
        if document.get("detector") != cls.name:
            raise DataError(f"{path / CONFIG_FILE}: holds a {document.get('detector')!r} model, not {cls.name!r}.")
        params = dict(document["config"])
        # The weights come from the file; never re-load (or download) backbone weights.
        if "backbone_weights" in params:
            params["backbone_weights"] = None
        try:
            detector = cls(**params)
            detector.spec_ = ImageSpec.from_dict(document["spec"])
        except (ConfigError, TypeError, ValueError) as err:
            raise DataError(f"{path / CONFIG_FILE}: its settings cannot rebuild the model ({err}). "
                            "Fix: re-save the model, or fit it again.") from None
        network = detector._build_model(detector.spec_)
        load_weights(network, path / WEIGHTS_FILE)
        detector.network_ = network.to(detector.device, memory_format=torch.channels_last).eval()
        try:
            detector._restore_saved_state(document.get("state") or {})
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"{path / CONFIG_FILE}: its 'state' cannot be restored ({err}). "
                            "Fix: restore the file, or fit the model again.") from None
        return detector


def write_model_folder(path: Path, network: nn.Module, document: dict) -> Path:
    """A model folder: config.json (`document` plus the library version) and model.safetensors (the
    network's weights). Detectors and segmenters both save through here; nothing is pickled."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG_FILE).write_text(json.dumps({**document, "defectmine_version": __version__}, indent=2))
    tensors = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    save_file(tensors, str(path / WEIGHTS_FILE))
    return path


def read_model_document(path: Path) -> dict:
    """A model folder's config.json, checked: it exists, is JSON, and has detector, config and spec."""
    path = Path(path)
    config_path = path / CONFIG_FILE
    if not path.is_dir():
        raise DataError(f"{path}: no such model folder. Fix: pass a run's model/ folder (written by `defectmine fit`).")
    if not config_path.is_file() or not (path / WEIGHTS_FILE).is_file():
        missing = CONFIG_FILE if not config_path.is_file() else WEIGHTS_FILE
        raise DataError(f"{path}: not a saved model folder ({missing} missing; expected {CONFIG_FILE} and "
                        f"{WEIGHTS_FILE}). Fix: pass a run's model/ folder.")
    try:
        document = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{config_path}: not valid JSON ({err}). Fix: restore the file or fit the model again.") from None
    missing = [key for key in ("detector", "config", "spec") if not isinstance(document, dict) or key not in document]
    if missing:
        raise DataError(f"{config_path}: incomplete model config (missing {', '.join(missing)}). "
                        "Fix: restore the file or fit the model again.")
    if not isinstance(document["config"], dict) or not isinstance(document["spec"], dict):
        raise DataError(f"{config_path}: 'config' and 'spec' must be JSON objects. Fix: restore the file.")
    return document


def saved_model_class(path: Path, document: dict, kind: str, registry: dict[str, type]) -> type:
    """The registered class named by `document[kind]` (a model folder's config.json, `kind` "detector" or
    "segmenter"), or one DataError naming the file and the known names."""
    name = document.get(kind, "")
    if name not in registry:
        raise DataError(f"{path / CONFIG_FILE}: unknown {kind} {name!r} (known: {', '.join(registry)}). "
                        "Fix: load it with the defectmine version that saved it.")
    return registry[name]


def load_weights(network: nn.Module, weights_path: Path) -> None:
    """Load a safetensors file into `network` with strict keys and shapes, or raise one DataError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise DataError(f"{weights_path}: cannot read the weights ({err}); the file is empty, truncated or not "
                        "safetensors. Fix: restore it or fit the model again.") from None
    expected = network.state_dict()
    # buffers a module added later (it says which in `optional_buffers`) may be absent from older files:
    # those keep their initial values, which the module reads as "not fitted"
    optional = {f"{name}.{buffer}" if name else buffer for name, module in network.named_modules()
                for buffer in getattr(module, "optional_buffers", ())}
    missing = sorted(set(expected) - set(state) - optional)
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong:
        detail = []
        if wrong:
            k = wrong[0]
            detail.append(f"{len(wrong)} tensor(s) of another shape, e.g. {k} {tuple(state[k].shape)} where the "
                          f"config builds {tuple(expected[k].shape)}")
        if missing:
            detail.append(f"{len(missing)} missing, e.g. {missing[0]}")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected, e.g. {unexpected[0]}")
        raise DataError(f"{weights_path}: the weights do not fit the network its config.json describes "
                        f"({'; '.join(detail)}). Fix: keep each model's weights with its own config.json.")
    network.load_state_dict(state, strict=not (optional - set(state)))
