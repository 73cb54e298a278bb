"""`defectmine serve RUN`: the inspection service (FastAPI + uvicorn) and its review page."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from defectmine.cli.app import app, console, friendly_errors


@app.command()
@friendly_errors
def serve(
    run: Path = typer.Argument(..., help="Run folder written by `defectmine fit` or `defectmine segment fit`."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (127.0.0.1: this machine only)."),
    port: int = typer.Option(8000, help="Port to listen on."),
    max_batch: int = typer.Option(16, help="Most images scored in one model call."),
    max_wait_ms: float = typer.Option(5.0, help="How long a batch waits for more images after its first (ms)."),
    max_upload_mb: float = typer.Option(32.0, help="Largest image file accepted (MiB)."),
    max_pixels: int = typer.Option(40_000_000, help="Largest image accepted (width x height, read from the header)."),
    max_files: int = typer.Option(64, help="Most images in one request."),
    overlay_size: int = typer.Option(512, help="Longest side of overlays (review page, heatmap_png) in pixels."),
    review_dir: Optional[Path] = typer.Option(None, help="Folder of the review queue and labels.csv (default RUN/review)."),
    review_max: int = typer.Option(1000, help="Images kept in the review queue (the oldest leave first)."),
    review_folder: Optional[Path] = typer.Option(None, help="Score this folder of images into the review queue at start."),
    log_level: str = typer.Option("info", help="uvicorn log level: critical, error, warning, info, debug."),
):
    """Serve a run's model over HTTP: POST /score, GET /health, GET /model, and the review page at /review.

    Example: defectmine serve runs/parts --port 8000   then   curl -F files=@part.png localhost:8000/score
    """
    from defectmine.serve import ServeSettings, UploadLimits, create_app, require_serve_packages

    require_serve_packages()
    import uvicorn

    limits = UploadLimits(max_bytes=int(max_upload_mb * 2**20), max_pixels=max_pixels)
    settings = ServeSettings(max_batch=max_batch, max_wait_ms=max_wait_ms, limits=limits, max_files=max_files,
                             overlay_side=overlay_size, review_dir=review_dir, review_max=review_max,
                             review_folder=review_folder)
    service = create_app(run, settings)
    console.print(f"serving {run} ({service.state.served.kind}) on http://{host}:{port}  review: "
                  f"http://{host}:{port}/review", highlight=False, soft_wrap=True)
    uvicorn.run(service, host=host, port=port, log_level=log_level)
