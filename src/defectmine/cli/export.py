"""`defectmine export RUN --format onnx|torchscript`: one file that `predict --model` runs without torch."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from defectmine.cli.app import app, console, friendly_errors


@app.command()
@friendly_errors
def export(
    run: Path = typer.Argument(..., help="Run folder (its model/ and the threshold in its metrics.json) or a saved model folder."),
    format: str = typer.Option("onnx", "--format", "-f", help="onnx (runs with onnxruntime, no torch) or torchscript."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="File to write (default: RUN/model.onnx, or model.pt for torchscript)."),
    overwrite: bool = typer.Option(False, help="Replace an existing --out."),
):
    """Export a detector or segmenter with its normalisation, map upsampling, threshold and image spec.

    The exported outputs are compared with the checkpoint's on seeded images before the file is
    written (tolerance 1e-4); Grad-CAM maps need gradients and are not exported (the file says so).

    \b
    Examples:
      defectmine export runs/parts --format onnx
      defectmine predict --model runs/parts/model.onnx \\
          --data new_images/ --out preds/
    """
    from defectmine.export import PARITY_TOLERANCE, export_model

    result = export_model(run, out, format=format, overwrite=overwrite)
    info = result.info
    console.print(f"exported {info.kind} [bold]{info.name}[/] to [bold]{escape(str(result.path))}[/] in "
                  f"{result.seconds:.1f} s")
    console.print(f"parity: max |exported - checkpoint| = {info.parity_max_abs_diff:.3g} (tolerance {PARITY_TOLERANCE:g})")
    threshold = "none" if info.threshold is None else f"{info.threshold:.4g}"
    console.print(f"threshold: {threshold} ({escape(info.threshold_source)}); image spec {info.spec.size[0]}x"
                  f"{info.spec.size[1]} px, {info.spec.channels} channel(s), {info.spec.resize}")
