"""Export: a detector or segmenter as one ONNX (or TorchScript) file with a parity guarantee.

    export_model(Path("runs/parts"), format="onnx")           # -> runs/parts/model.onnx
    model = load_exported("runs/parts/model.onnx")             # onnxruntime; torch is not imported
    model.score(pixels)                                        # the checkpoint's Scores (native maps)
    predict_exported("runs/parts/model.onnx", "new/", "preds/")  # as `defectmine predict`

The graph takes raw uint8 pixels (N, C, H, W) at the model's image spec and holds normalisation, the
network and the map upsampling; the file carries the threshold, image spec, config and outputs as
metadata (`metadata.ExportInfo`). Names are imported on first use: loading and predicting need
onnxruntime and numpy only, exporting needs torch and onnx.
"""

from defectmine._lazy import lazy_exports

_EXPORTS = {
    "FORMATS": "metadata",
    "ExportInfo": "metadata",
    "ExportResult": "build",
    "ExportedModel": "runtime",
    "PARITY_TOLERANCE": "build",
    "export_model": "build",
    "load_exported": "runtime",
    "predict_exported": "runtime",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
