"""Scoring with an exported model: onnxruntime for .onnx (no torch imported), torch.jit for .pt.

    model = load_exported("runs/parts/model.onnx")
    scores = model.score(pixels)          # uint8 (N, C, H, W) numpy at model.spec_ -> Scores
    predict_exported("runs/parts/model.onnx", "new_images/", "preds/")   # as `defectmine predict`
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from defectmine.core.results import ClassMaps, Scores
from defectmine.errors import ConfigError, DataError
from defectmine.export.metadata import INPUT_NAME, TORCHSCRIPT_EXTRA, ExportInfo, format_of, output_names

PIP_HINT = "pip install 'defectmine[export]' (or: pip install onnxruntime)"
_REEXPORT = "Fix: export it again with `defectmine export RUN --format {format}`."


class ExportedModel:
    """A loaded exported model with a detector's scoring face: `spec_`, `config.score_batch_size`,
    `score(pixels) -> Scores`, and for segmenters `predict(pixels) -> ClassMaps`.

    Pixels are uint8 (N, C, H, W) at `spec_` as numpy (torch tensors on the CPU are taken too);
    `takes_numpy` tells `predict_folder` to hand over numpy batches, so torch is never needed.
    """

    takes_numpy = True

    def __init__(self, path: Path, info: ExportInfo, run) -> None:
        self.path, self.info, self._run = Path(path), info, run
        batch = info.config.get("score_batch_size") or info.config.get("predict_batch_size") or 32
        self.config = SimpleNamespace(score_batch_size=int(batch))
        self.name = info.name

    @property
    def spec_(self):
        return self.info.spec

    @property
    def threshold(self) -> float | None:
        return self.info.threshold

    def outputs(self, pixels) -> dict[str, np.ndarray]:
        """Every graph output by name (score, map, and probabilities for segmenters) of a uint8 batch."""
        pixels = np.ascontiguousarray(np.asarray(pixels))
        expected = (self.spec_.channels, *self.spec_.size)
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or tuple(pixels.shape[1:]) != expected:
            raise DataError(f"{self.path}: takes uint8 pixels of shape (N, {', '.join(map(str, expected))}); got "
                            f"{pixels.dtype} {tuple(pixels.shape)}. Fix: prepare the images with the model's image "
                            "spec (defectmine.data.prepare_image).")
        if len(pixels) == 0:
            return {name: np.zeros((0,), np.float32) for name in output_names(self.info.kind)}
        return dict(zip(output_names(self.info.kind), self._run(pixels)))

    def score(self, pixels, *, maps: bool = True) -> Scores:
        """Image scores and maps at the input size, as the checkpoint's `score` (native maps)."""
        out = self.outputs(pixels)
        with_maps = maps and not self.info.score_only
        return Scores(image=out["score"], maps=out["map"].astype(np.float32) if with_maps else None)

    def predict(self, pixels) -> ClassMaps:
        """Per-class probabilities (background first) of an exported segmenter, as its `predict`."""
        if self.info.kind != "segmenter":
            raise ConfigError(f"{self.path}: holds the detector {self.name!r}; only segmenters predict class maps. "
                              "Fix: use score().")
        return ClassMaps(self.outputs(pixels)["probabilities"], tuple(self.info.classes))

    def run_context(self) -> dict:
        """What `predict_folder` reads from a run folder, here from the file: threshold (and its
        source), the validation map range and the display quantile."""
        context = {}
        if self.info.threshold is not None:
            context["threshold"] = self.info.threshold
            context["threshold_source"] = "exported model"
        shown = self.info.display_range or {}
        if shown.get("map_min") is not None and shown.get("map_max") is not None:
            context["map_range"] = (shown["map_min"], shown["map_max"])
        if shown.get("display_quantile") is not None:
            context["display_quantile"] = float(shown["display_quantile"])
        return context


def load_exported(path: Path | str, *, threads: int | None = None) -> ExportedModel:
    """Load a file written by `defectmine export`: .onnx with onnxruntime (CPU), .pt with torch.jit.

    threads: intra-op threads of the runtime (None: its default, all cores).
    Raises DataError for a missing, corrupt or foreign file (no defectmine metadata), ConfigError when
    onnxruntime is not installed.
    """
    path = Path(path)
    kind = format_of(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file. Fix: pass a model exported with `defectmine export RUN`.")
    if kind is None:
        raise DataError(f"{path}: not an exported model (expected .onnx or .pt). Fix: pass the file that "
                        "`defectmine export RUN` wrote, or a saved model folder.")
    load = _load_onnx if kind == "onnx" else _load_torchscript
    info, run = load(path, threads)
    if info.format != kind:
        raise DataError(f"{path}: metadata says format {info.format!r} but the file is {kind}. {_REEXPORT.format(format=kind)}")
    return ExportedModel(path, info, run)


def _load_onnx(path: Path, threads: int | None):
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError(f"{path}: running an ONNX model needs onnxruntime. Fix: {PIP_HINT}.") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: our own messages say what went wrong
    if threads:
        options.intra_op_num_threads = options.inter_op_num_threads = int(threads)
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own pybind classes (InvalidProtobuf, Fail, ...)
        reason = str(err).strip().splitlines()[0][:300]
        raise DataError(f"{path}: not a readable ONNX model ({reason}). {_REEXPORT.format(format='onnx')}") from None
    info = ExportInfo.from_props(session.get_modelmeta().custom_metadata_map, path)
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME or inputs[0].type != "tensor(uint8)":
        raise DataError(f"{path}: expected one uint8 input {INPUT_NAME!r}, the graph has "
                        f"{[(i.name, i.type) for i in inputs]}. {_REEXPORT.format(format='onnx')}")
    names = output_names(info.kind)
    return info, lambda pixels: session.run(names, {INPUT_NAME: pixels})


def _load_torchscript(path: Path, threads: int | None):
    try:
        import torch
    except ImportError:
        raise ConfigError(f"{path}: a TorchScript model needs torch. Fix: export to ONNX "
                          "(`defectmine export RUN --format onnx`) to predict without torch.") from None
    extra = {TORCHSCRIPT_EXTRA: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream; still loads
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except (RuntimeError, ValueError, OSError) as err:
        reason = str(err).strip().splitlines()[0][:300]
        raise DataError(f"{path}: not a readable TorchScript model ({reason}). "
                        f"{_REEXPORT.format(format='torchscript')}") from None
    try:
        props = json.loads(extra[TORCHSCRIPT_EXTRA] or "{}")
    except (ValueError, UnicodeDecodeError):
        props = {}
    info = ExportInfo.from_props(props if isinstance(props, dict) else {}, path)
    if threads:
        torch.set_num_threads(int(threads))

    def run(pixels: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            return [t.numpy() for t in module(torch.from_numpy(pixels))]

    return info, run


def predict_exported(model_path: Path | str, data: str, out_dir: Path, **options):
    """`predict_folder` with an exported model: the same scores.csv, overlays, skipped.csv and
    predict.json as with the model folder; threshold and display range from the file. Options as
    `defectmine.pipeline.predict.predict_folder` (heatmap: native only)."""
    from defectmine.pipeline.predict import predict_folder

    return predict_folder(load_exported(model_path), data, out_dir, **options)
