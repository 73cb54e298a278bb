"""`defectmine synthesize`: synthetic defect images from a small diffusion model, as labelled data."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from defectmine.cli.app import app, console, friendly_errors


@app.command("synthesize")
@friendly_errors
def synthesize(
    data: str = typer.Option(..., "--data", "-d", help="Folder (normal/, anomalous/<class>/, masks/), CSV manifest or built-in set; its training split is used."),
    out: Path = typer.Option(Path("synthetic"), "--out", "-o", help="Output folder: anomalous/<class>/, masks/anomalous/<class>/, samples.png, model/."),
    n: int = typer.Option(100, "--n", "-n", help="Synthetic images per defect class."),
    classes: Optional[str] = typer.Option(None, help="Comma-separated defect classes (default: every class with a training defect)."),
    k: Optional[int] = typer.Option(None, help="Use the first K labelled training defects (default: all)."),
    model: Optional[Path] = typer.Option(None, help="A saved synthesis model (a previous out/model) or a local diffusers pipeline folder with synth.json; default: train one here."),
    image_size: int = typer.Option(64, help="Side of the generated images."),
    channels: int = typer.Option(1, help="1 (grayscale) or 3 (RGB)."),
    train_steps: int = typer.Option(300, help="Diffusion training steps (batches)."),
    batch_size: int = typer.Option(16, help="Diffusion training batch size."),
    steps: int = typer.Option(25, help="DDIM sampling steps."),
    resample: int = typer.Option(1, help="RePaint resampling per step (2-3 blends the seams better; that many times slower)."),
    strength: float = typer.Option(1.0, help="1: paint the defect from noise inside a real defect's shape; <1: start from the pasted real defect (SDEdit)."),
    seed: int = typer.Option(0),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    overwrite: bool = typer.Option(False, help="Write into a non-empty --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Train a class-conditional DDPM on the training images, paint N defects per class into normal images
    (RePaint-style inpainting, real defect shapes) and write image + mask pairs in the folder layout, so
    that fit / segment fit can take them as extra labelled defects.

    Example: defectmine synthesize --data my_images/ --out synthetic/ --n 100 --train-steps 300
    """
    from defectmine.errors import ConfigError
    from defectmine.pipeline import RunConfig, prepare_data
    from defectmine.synth.diffusion import DiffusionConfig
    from defectmine.synth.run import synthesize_folder

    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out} is not empty. Fix: pass an empty or new --out, or --overwrite.")
    config = DiffusionConfig(image_size=image_size, channels=channels, train_steps=train_steps,
                             batch_size=batch_size, seed=seed)
    prepared = prepare_data(RunConfig(data=data, k=k, image_size=image_size, channels=channels, quiet=quiet))
    wanted = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
    summary = synthesize_folder(prepared.normal, prepared.anomalous, out, n=n, classes=wanted, config=config,
                                model=model, steps=steps, resample=resample, strength=strength, device=device,
                                quiet=quiet)
    for name, count in summary["classes"].items():
        console.print(f"{escape(name)}: [bold]{count}[/] synthetic image(s)")
    console.print(f"images, masks and samples.png: [bold]{escape(str(out))}[/]")
