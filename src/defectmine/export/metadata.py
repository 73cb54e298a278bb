"""What an exported model file says about itself: the metadata that makes it usable without its run.

ONNX files carry it as `metadata_props` (string keys and values, shown by Netron and by
`onnxruntime.InferenceSession(...).get_modelmeta().custom_metadata_map`); TorchScript files as one JSON
extra file, `defectmine.json`, holding the same keys. Plain text for names, JSON for everything else.
Torch-free: `predict --model model.onnx` reads it with onnxruntime alone.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from defectmine.data.images import ImageSpec
from defectmine.errors import ConfigError, DataError

#: --format -> file suffix.
FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
KINDS = ("detector", "segmenter")
PREFIX = "defectmine."
#: The one input of every exported graph: raw uint8 pixels (N, C, H, W) at the image spec.
INPUT_NAME = "images"
MAPS_NOTE = "maps: native; gradcam not exported (needs gradients)"
#: For a detector whose own maps need gradients (vae_gradcam's attention): the graph gives the score only.
SCORE_ONLY_NOTE = "maps: none (the model's maps are Grad-CAM attention, which needs gradients); score only"
TORCHSCRIPT_EXTRA = "defectmine.json"
_TEXT = ("version", "kind", "name", "threshold_source", "maps", "format")


def check_format(name: str) -> str:
    """`name` if it is a known --format, else one ConfigError listing the known ones."""
    if name not in FORMATS:
        raise ConfigError(f"--format {name!r} is unknown. Fix: use one of {', '.join(FORMATS)}.")
    return name


def format_of(path: Path) -> str | None:
    """The export format a file name says (by its suffix), or None."""
    suffix = Path(path).suffix.lower()
    return next((name for name, known in FORMATS.items() if known == suffix), None)


def output_names(kind: str) -> list[str]:
    """The graph outputs, in order: detectors give score and map, segmenters probabilities too."""
    return ["score", "map"] + (["probabilities"] if kind == "segmenter" else [])


def describe_outputs(kind: str, spec: ImageSpec) -> list[dict]:
    """The outputs list stored in the file: name, shape and meaning of each."""
    h, w = spec.size
    meanings = {
        "score": (["batch"], "image anomaly score, higher = more anomalous (the checkpoint's score)"),
        "map": (["batch", h, w], "anomaly map at the input size (native: receptive-field upsampled)"
                if kind == "detector" else "largest defect-class probability per pixel"),
        "probabilities": (["batch", "classes", h, w], "per-class probabilities, background first"),
    }
    return [{"name": n, "shape": meanings[n][0], "meaning": meanings[n][1]} for n in output_names(kind)]


@dataclass(frozen=True)
class ExportInfo:
    """Everything an exported file records besides its graph.

    threshold: the run's decision threshold on `score` (chosen on validation), None for a bare model
        folder; threshold_source says where it came from. Segmenters also keep `pixel_threshold` (on
        `map`) and their `classes` (background first). display_range: the run's validation map range and
        display quantile, so that overlays of the exported model match the torch predict's.
    parity_max_abs_diff: the largest difference between exported and checkpoint outputs measured at
        export time (on seeded random images).
    """

    kind: str
    name: str
    format: str
    config: dict
    spec: ImageSpec
    threshold: float | None
    threshold_source: str
    version: str = ""
    maps: str = MAPS_NOTE
    outputs: list = field(default_factory=list)
    classes: list | None = None
    pixel_threshold: float | None = None
    display_range: dict | None = None
    parity_max_abs_diff: float | None = None
    source: dict = field(default_factory=dict)

    @property
    def score_only(self) -> bool:
        """True when the file gives image scores only (the model's maps need gradients)."""
        return self.maps == SCORE_ONLY_NOTE

    def to_props(self) -> dict[str, str]:
        """String key -> string value, every key prefixed with "defectmine."."""
        props = {}
        for key in self.__dataclass_fields__:
            value = getattr(self, key)
            value = value.to_dict() if isinstance(value, ImageSpec) else value
            props[PREFIX + ("image_spec" if key == "spec" else key)] = value if key in _TEXT else json.dumps(value)
        return props

    @classmethod
    def from_props(cls, props: dict[str, str], path: Path) -> "ExportInfo":
        """Read `to_props` output back; one DataError naming `path` when it is missing or broken."""
        ours = {k[len(PREFIX):]: v for k, v in props.items() if k.startswith(PREFIX)}
        fix = "Fix: export the run with `defectmine export RUN` (defectmine needs the image spec and outputs it records)."
        if not ours:
            raise DataError(f"{path}: no defectmine metadata in this model (exported by something else?). {fix}")
        required = ("kind", "name", "format", "config", "image_spec", "threshold", "threshold_source", "outputs")
        missing = [k for k in required if k not in ours]
        if missing:
            raise DataError(f"{path}: incomplete defectmine metadata (missing {', '.join(PREFIX + k for k in missing)}). "
                            f"{fix}")
        values = {}
        for key, text in ours.items():
            name = "spec" if key == "image_spec" else key
            if name not in cls.__dataclass_fields__:
                continue  # written by a newer defectmine: not needed to run the graph
            try:
                values[name] = text if name in _TEXT else json.loads(text)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: metadata {PREFIX + key} is not valid JSON ({err}). {fix}") from None
        try:
            values["spec"] = ImageSpec.from_dict(values["spec"])
        except (ConfigError, TypeError) as err:
            raise DataError(f"{path}: metadata {PREFIX}image_spec is invalid ({err}). {fix}") from None
        if not isinstance(values["config"], dict) or not isinstance(values["outputs"], list):
            raise DataError(f"{path}: metadata {PREFIX}config must be a JSON object and {PREFIX}outputs a list. {fix}")
        info = cls(**values)
        if info.kind not in KINDS:
            raise DataError(f"{path}: metadata {PREFIX}kind={info.kind!r}; expected one of {', '.join(KINDS)}. {fix}")
        threshold = info.threshold
        if threshold is not None and not (isinstance(threshold, (int, float)) and math.isfinite(threshold)):
            raise DataError(f"{path}: metadata {PREFIX}threshold={threshold!r} is not a finite number or null. {fix}")
        return info
