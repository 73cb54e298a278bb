"""`defectmine export`: a run's (or a model folder's) detector or segmenter as one ONNX or TorchScript
file that holds normalisation, the network and the map upsampling, with its threshold and image spec.

    result = export_model(Path("runs/parts"), format="onnx")   # -> runs/parts/model.onnx
    load_exported(result.path).score(pixels)                    # the checkpoint's scores, without torch

Before a file is written, the exported graph is run on seeded random images at another batch size than
the one traced, and its outputs are compared with the checkpoint's `score` / `predict`: a difference
above `PARITY_TOLERANCE` (times the outputs' scale when that exceeds 1) is an error and writes nothing.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from defectmine import __version__
from defectmine.errors import ConfigError, DataError
from defectmine.export.graph import graph_for
from defectmine.export.metadata import (
    FORMATS,
    INPUT_NAME,
    TORCHSCRIPT_EXTRA,
    SCORE_ONLY_NOTE,
    ExportInfo,
    check_format,
    describe_outputs,
    output_names,
)
from defectmine.export.runtime import PIP_HINT, load_exported
from defectmine.models.base import CONFIG_FILE, read_model_document
from defectmine.pipeline.predict import run_context
from defectmine.pipeline.run_folder import METRICS_FILE, MODEL_DIR, WEIGHTS_FILE, file_sha256

#: Largest allowed |exported - checkpoint| of any output, for outputs of scale <= 1 (relative above).
PARITY_TOLERANCE = 1e-4
#: ONNX opset of the TorchScript-based exporter (dynamo=False: it needs no onnxscript, and traces the
#: same ops that `score` runs).
OPSET = 17
PARITY_SEED, PARITY_BATCH, TRACE_BATCH = 0, 3, 2


@dataclass
class ExportResult:
    """What `export_model` wrote: the file, its metadata, and how long it took."""

    path: Path
    info: ExportInfo
    seconds: float


def export_model(source: Path | str, out: Path | str | None = None, *, format: str = "onnx",
                 overwrite: bool = False) -> ExportResult:
    """Export the model of a run folder (`<run>/model`, threshold from its metrics.json) or of a bare
    model folder to `out` (default: `<run>/model.onnx`, or `model.onnx` inside a bare model folder; .pt
    for TorchScript). An existing `out` is refused unless `overwrite`.

    Raises ConfigError for an unknown format or a missing exporter, DataError for a folder that holds
    no model, and DataError when the exported graph does not reproduce the checkpoint's outputs.
    """
    started = time.perf_counter()
    check_format(format)
    model_dir, run_dir = locate_model(Path(source))
    out = Path(out) if out is not None else (run_dir or model_dir) / f"model{FORMATS[format]}"
    if out.suffix.lower() != FORMATS[format]:
        raise ConfigError(f"--out {out}: a {format} file must end in {FORMATS[format]}. Fix: rename it.")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out}: exists. Fix: choose another --out, or pass --overwrite to replace it.")
    if format == "onnx":
        _require_onnx()
    model, kind, document = _load(model_dir)
    info = _describe(model, kind, document, model_dir, format)
    graph = graph_for(model, kind)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.stem}.partial-{os.getpid()}{out.suffix}")  # the suffix says the format
    try:
        example = _random_pixels(model.spec_, TRACE_BATCH, PARITY_SEED + 1)
        (_write_onnx if format == "onnx" else _write_torchscript)(graph, example, info, partial)
        info = _check_parity(model, kind, partial, info)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return ExportResult(out, info, time.perf_counter() - started)


def locate_model(source: Path) -> tuple[Path, Path | None]:
    """(model folder, run folder or None): `source` is a run folder (model/ inside) or a model folder."""
    if (source / MODEL_DIR / CONFIG_FILE).is_file():
        return source / MODEL_DIR, source
    if not (source / CONFIG_FILE).is_file() and source.is_dir():
        raise DataError(f"{source}: neither a run folder (no {MODEL_DIR}/ inside) nor a saved model folder (no "
                        f"{CONFIG_FILE}). Fix: pass the folder `defectmine fit` (or `segment fit`) wrote, or its "
                        f"{MODEL_DIR}/.")
    read_model_document(source)  # a missing folder or a broken config.json: one error naming the file
    in_run = source.name == MODEL_DIR and (source.parent / METRICS_FILE).is_file()
    return source, source.parent if in_run else None


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ConfigError(f"exporting to ONNX needs onnx and onnxruntime. Fix: {PIP_HINT.replace('onnxruntime', 'onnx onnxruntime')}.") from None


def _load(model_dir: Path):
    """(model on the CPU, "detector" | "segmenter", its config.json)."""
    document = read_model_document(model_dir)
    if "segmenter" in document:
        from defectmine.segment import load_segmenter

        model, kind = load_segmenter(model_dir), "segmenter"
    else:
        from defectmine.models.registry import load_detector

        model, kind = load_detector(model_dir), "detector"
    if hasattr(model.config, "device"):
        model.config.device = "cpu"  # the reference scores and the trace run on the CPU, as the runtime does
    model.network_.to("cpu").eval()
    return model, kind, document


def _describe(model, kind: str, document: dict, model_dir: Path, format: str) -> ExportInfo:
    """The metadata: threshold and display range from the run (when the model sits in one)."""
    run = run_context(model_dir)  # also refuses a model/ whose weights are not the run's
    threshold, source = run.get("threshold"), f"run {model_dir.parent / METRICS_FILE} (chosen on validation)"
    extra = {}
    if kind == "segmenter":
        extra = {"classes": list(model.classes_), "pixel_threshold": float(model.threshold_)}
        if threshold is None:  # as `segment predict` does for a bare model folder
            threshold, source = float(model.threshold_), "the segmenter's pixel threshold (bare model folder)"
    elif threshold is None:
        source = "none (bare model folder; pass --threshold to predict)"
    shown = None
    if run.get("map_range") is not None:
        shown = {"map_min": run["map_range"][0], "map_max": run["map_range"][1],
                 "display_quantile": run.get("display_quantile")}
    if getattr(model, "maps_need_gradients", False):
        extra["maps"] = SCORE_ONLY_NOTE
    return ExportInfo(
        kind=kind, name=model.name, format=format, config=document["config"], spec=model.spec_,
        threshold=None if threshold is None else float(threshold), threshold_source=source, version=__version__,
        outputs=describe_outputs(kind, model.spec_), display_range=shown,
        source={"model": os.path.abspath(model_dir), "weights_sha256": file_sha256(model_dir / WEIGHTS_FILE)},
        **extra,
    )


def _random_pixels(spec, n: int, seed: int) -> torch.Tensor:
    """n seeded random uint8 images at `spec`; the first all black and the second all white, the extremes."""
    pixels = np.random.default_rng(seed).integers(0, 256, (n, spec.channels, *spec.size), dtype=np.uint8)
    pixels[0], pixels[min(1, n - 1)] = 0, 255
    return torch.from_numpy(pixels)


# The tracer warns about shape checks and Python ints that are constants here by design (the image spec
# is fixed; only the batch axis varies), and torch.jit / the TorchScript-based exporter about their
# deprecation: nothing the user can act on, so export runs with warnings off.


def _write_onnx(graph, example: torch.Tensor, info: ExportInfo, path: Path) -> None:
    names = output_names(info.kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, (example,), str(path), input_names=[INPUT_NAME], output_names=names,
                          dynamic_axes={name: {0: "batch"} for name in [INPUT_NAME, *names]},
                          opset_version=OPSET, dynamo=False)
    _set_metadata(path, info)


def _write_torchscript(graph, example: torch.Tensor, info: ExportInfo, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(graph, (example,), check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={TORCHSCRIPT_EXTRA: json.dumps(info.to_props())})


def _set_metadata(path: Path, info: ExportInfo) -> None:
    """(Re)write the file's metadata: ONNX metadata_props (checked with onnx.checker), or the
    TorchScript extra file."""
    if info.format == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.load(str(path), map_location="cpu")
            torch.jit.save(module, str(path), _extra_files={TORCHSCRIPT_EXTRA: json.dumps(info.to_props())})
        return
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in info.to_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.doc_string = f"defectmine {info.kind} {info.name}: uint8 {INPUT_NAME} -> {', '.join(output_names(info.kind))}"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _check_parity(model, kind: str, path: Path, info: ExportInfo) -> ExportInfo:
    """Run the exported file and the checkpoint on the same seeded images; record the largest
    difference in the file's metadata, or raise when it exceeds the tolerance."""
    pixels = _random_pixels(model.spec_, PARITY_BATCH, PARITY_SEED)
    exported = load_exported(path).outputs(pixels.numpy())
    if kind == "detector":
        scores = model.score(pixels, maps=not info.score_only)
        reference = {"score": scores.image} if info.score_only else {"score": scores.image, "map": scores.maps}
    else:
        maps = model.predict(pixels)
        scores = maps.anomaly_scores("max")
        reference = {"score": scores.image, "map": scores.maps, "probabilities": maps.probabilities}
    worst, scale = 0.0, 1.0
    for name, expected in reference.items():
        expected = np.asarray(expected, dtype=np.float64)
        worst = max(worst, float(np.max(np.abs(np.asarray(exported[name], dtype=np.float64) - expected))))
        scale = max(scale, float(np.max(np.abs(expected))))
    if not worst <= PARITY_TOLERANCE * scale:
        raise DataError(f"the exported {info.format} graph of {info.kind} {info.name!r} differs from the checkpoint "
                        f"by {worst:.3g} (tolerance {PARITY_TOLERANCE * scale:.3g}); nothing was written. Fix: "
                        "report it with the model's config.json; predict with the model folder meanwhile.")
    info = replace(info, parity_max_abs_diff=worst)
    _set_metadata(path, info)
    return info
