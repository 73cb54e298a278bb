"""`defectmine prompt-segment`: masks and per-pixel uncertainty from foreground / background prompts.

Visual prompts (offline, default): each --foreground / --background is NAME=FOLDER of example crops,
matched against an encoder's features (ours, e.g. `defectmine pretrain` weights). Text prompts: with
--clipseg FOLDER (a local CLIPSeg model + tokenizer, needs transformers), each query is a text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from defectmine.cli.app import app, console, friendly_errors


@app.command("prompt-segment")
@friendly_errors
def prompt_segment(
    data: str = typer.Option(..., "--data", "-d", help="Folder of images (any layout), CSV manifest, or one image."),
    foreground: list[str] = typer.Option(..., "--foreground", "-f", help="A foreground query (repeatable): NAME=FOLDER of example crops, or a text with --clipseg."),
    background: list[str] = typer.Option(..., "--background", "-b", help="A background query (repeatable), like --foreground."),
    out: Path = typer.Option(Path("prompt-segment"), "--out", "-o", help="Output folder: masks/, uncertainty/, scores.csv, report.html."),
    clipseg: Optional[Path] = typer.Option(None, help="Local CLIPSeg model folder: queries are text prompts (needs transformers)."),
    encoder: str = typer.Option("cnn", help="Encoder of the visual prompts: cnn, vit_tiny or a timm name."),
    weights: Optional[Path] = typer.Option(None, help="Encoder weights: a file or a `defectmine pretrain` output folder (default: random init)."),
    width: int = typer.Option(8, help="Width of the cnn / vit_tiny encoder (that of the weights)."),
    image_size: int = typer.Option(128, help="Images are resized to SIZE x SIZE."),
    channels: int = typer.Option(1, help="1 (grayscale) or 3 (RGB)."),
    temperature: float = typer.Option(0.1, help="Visual prompts: similarity temperature (smaller = sharper maps)."),
    match: str = typer.Option("nearest", help="Visual prompts: nearest (most similar example cell) or prototype (mean example feature)."),
    mc_samples: int = typer.Option(0, help="MC-dropout passes for the 'mc' uncertainty (0: none)."),
    dropout: float = typer.Option(0.1, help="Visual prompts: feature dropout of the MC passes."),
    uncertainty: str = typer.Option("entropy", help="Uncertainty shown and written: entropy, spread (query disagreement) or mc."),
    seed: int = typer.Option(0, help="Seed of the dropout masks."),
    overwrite: bool = typer.Option(False, help="Replace a non-empty --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Segment images from prompts: foreground = mean of the foreground queries' maps, background = mean of the
    background ones, mask = foreground > background, with an uncertainty map beside every mask.

    Examples:

      defectmine prompt-segment -d images/ -f crack=prompts/crack -b tile=prompts/tile --out seg/

      defectmine prompt-segment -d images/ --clipseg models/clipseg -f "a crack" -f "a scratch" -b "smooth metal"
    """
    from defectmine.data.images import ImageSpec
    from defectmine.prompt.run import prompt_segment_folder, source_scale, visual_query

    spec = ImageSpec(size=(image_size, image_size), channels=channels)
    settings = {"backend": "clipseg" if clipseg else f"visual ({encoder})", "foreground": " | ".join(foreground),
                "background": " | ".join(background), "uncertainty": uncertainty, "mc_samples": mc_samples,
                "image_size": image_size, "weights": str(weights or clipseg or "random init")}
    if clipseg is not None:
        from defectmine.prompt import load_clipseg

        backend, fg, bg = load_clipseg(clipseg), list(foreground), list(background)
    else:
        from defectmine.backbones import build_encoder
        from defectmine.pretrain.run import resolve_init_weights
        from defectmine.prompt import VisualPromptBackend

        resolved = resolve_init_weights(weights, encoder, width, 8) if weights is not None else None
        backend = VisualPromptBackend(build_encoder(encoder, channels, width=width, weights=resolved), spec,
                                      temperature=temperature, match=match,
                                      dropout=dropout if mc_samples else 0.0)
        scale = source_scale(data, spec)
        fg = [visual_query(q, spec, scale) for q in foreground]
        bg = [visual_query(q, spec, scale) for q in background]
    summary = prompt_segment_folder(backend, data, out, fg, bg, spec, settings=settings, mc_samples=mc_samples,
                                    uncertainty=uncertainty, seed=seed, overwrite=overwrite, quiet=quiet)
    if summary["skipped"]:
        console.print(f"[yellow]not read:[/] {len(summary['skipped'])} file(s): "
                      + escape(", ".join(s["path"] for s in summary["skipped"][:5])))
    console.print(f"segmented [bold]{summary['images']}[/] image(s); defect share {summary['defect_share']:.3f}, "
                  f"mean {uncertainty} uncertainty {summary['mean_uncertainty']:.3f}")
    console.print(f"masks, uncertainty maps, scores.csv and report.html: [bold]{escape(str(out))}[/]")
