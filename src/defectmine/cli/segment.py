"""`defectmine segment fit | predict | evaluate`: per-class defect masks with a U-Net.

The commands parse options and call `defectmine.pipeline.segment_run` / `segment_predict`; data,
splits, run folders and errors are the ones of detection's fit / predict / evaluate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from defectmine.cli.app import app, console, friendly_errors, parse_params
from defectmine.cli.options import split_list

segment_app = typer.Typer(
    add_completion=False, rich_markup_mode=None, no_args_is_help=True,
    help="Segment defects by class: train a U-Net on class masks, write class masks and per-class metrics.",
)
app.add_typer(segment_app, name="segment")


@segment_app.command("fit")
@friendly_errors
def fit(
    data: str = typer.Option(..., "--data", "-d", help="Folder (normal/, anomalous/<class>/, masks/), CSV manifest with mask and split columns, or a built-in split: magnetic_tile_seg_s0 ... _s4 (the DLI protocol), magnetic_tile."),
    out: Path = typer.Option(Path("runs/segment"), "--out", "-o", help="Run directory to write."),
    encoder: str = typer.Option("resnet18", help="resnet18, mobileone_s1, resnest50d (the DLI paper's) or cnn."),
    loss: str = typer.Option("bce_dice", help="bce_dice, bce, focal, balanced or weighted_ce."),
    epochs: int = typer.Option(30, help="Training epochs."),
    image_size: int = typer.Option(128, help="Images are resized to SIZE x SIZE (a multiple of 8)."),
    channels: int = typer.Option(1, help="1 (grayscale) or 3 (RGB)."),
    resize: str = typer.Option("stretch", help="'stretch' or 'pad' (keep the aspect ratio; masks follow the images)."),
    injection: bool = typer.Option(True, help="Dynamic Label Injection: paste training defects into defect-free training images."),
    keep_clean: float = typer.Option(0.1, help="Share of defect-free training images injection leaves as they are."),
    blend: str = typer.Option("poisson,cutpaste", help="How injection pastes a defect, one of these at random each time: poisson (mixed gradients), poisson_normal, cutpaste."),
    param: list[str] = typer.Option([], "--param", "-p", metavar="KEY=VALUE", help="U-Net option (repeatable), e.g. -p lr=0.0005 -p batch_size=8."),
    overwrite: bool = typer.Option(False, help="Replace a non-empty --out (the old run stays until the new one is complete)."),
    seed: int = typer.Option(0, help="Training seed."),
    split_seed: int = typer.Option(0, help="Seed of the split when the data carries none."),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu or cuda."),
    skip_bad: bool = typer.Option(False, help="Skip unreadable images (and list them) instead of stopping."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Train a U-Net on class masks and write a run directory (config, split, model, scores, metrics, report).

    Examples:

      defectmine segment fit --data my_images/ --out runs/seg --encoder mobileone_s1

      defectmine segment fit --data magnetic_tile_seg_s0 --loss focal --epochs 50 --out runs/mt
    """
    from defectmine.pipeline.segment_run import SegmentConfig, fit_segment_run

    config = SegmentConfig(data=data, encoder=encoder, loss=loss, epochs=epochs, image_size=image_size,
                           channels=channels, resize=resize, injection=injection, keep_clean=keep_clean,
                           blend=tuple(split_list(blend, "--blend")),
                           segmenter_params=parse_params(param), seed=seed, split_seed=split_seed, device=device,
                           skip_bad=skip_bad, quiet=quiet)
    result = fit_segment_run(config, out, overwrite=overwrite)
    print_segment_metrics(result.metrics, result.run_dir)


@segment_app.command("predict")
@friendly_errors
def predict(
    model: Path = typer.Option(..., "--model", "-m", help="Saved segmenter folder (a segment run's model/)."),
    data: str = typer.Option(..., "--data", "-d", help="Folder of images (any layout), CSV manifest, or one image."),
    out: Path = typer.Option(Path("segmentations"), "--out", "-o", help="Output folder: masks/, overlays/, scores.csv. Must be empty or new (see --overwrite)."),
    probabilities: bool = typer.Option(False, help="Also write per-class probability maps (probabilities/*.npy, float16)."),
    batch_size: Optional[int] = typer.Option(None, help="Images segmented at once (default: the model's)."),
    overwrite: bool = typer.Option(False, help="Replace a non-empty --out (kept until the new outputs are complete)."),
    skip_bad: bool = typer.Option(False, help="Skip unreadable images: list them in skipped.csv and go on."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Segment a folder of images: class-index masks (palette PNGs), overlays and per-class areas.

    Example: defectmine segment predict --model runs/seg/model --data new_images/ --out seg/
    """
    from defectmine.pipeline.segment_predict import predict_segment_folder

    s = predict_segment_folder(model, data, out, probabilities=probabilities, batch_size=batch_size,
                               overwrite=overwrite, skip_bad=skip_bad, quiet=quiet)
    if s.n_skipped:
        console.print(f"[yellow]not segmented:[/] {s.n_skipped} file(s) - see [bold]{escape(str(s.out_dir / 'skipped.csv'))}[/]")
    console.print(f"segmented [bold]{s.n_images}[/] image(s) in {s.seconds:.1f} s; with a defect: "
                  f"{s.n_with_defects} (image threshold {s.image_threshold:.4g}, pixel threshold {s.pixel_threshold:.4g})")
    console.print(f"masks, overlays and scores.csv: [bold]{escape(str(s.out_dir))}[/]")


@segment_app.command("evaluate")
@friendly_errors
def evaluate(
    run: Path = typer.Argument(..., help="Run directory written by `defectmine segment fit`."),
    data_root: Optional[Path] = typer.Option(None, help="Folder the run's images moved to (split.csv paths are relative to the data root recorded at fit)."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Re-score a segment run's val/test split with its saved model; rewrite metrics.json and report.html."""
    from defectmine.pipeline.segment_run import evaluate_segment_run

    result = evaluate_segment_run(run, data_root=data_root, quiet=quiet)
    print_segment_metrics(result.metrics, result.run_dir)


def print_segment_metrics(metrics: dict, run_dir: Path) -> None:
    """Per-class IoU / Dice, pooled IoU and the image-level metrics of the test (or val) set."""
    part = "test" if metrics.get("test") else "val"
    values = metrics["segmentation"][part]
    table = Table(title=f"{part} segmentation (pixel threshold {metrics['pixel_threshold']:.3g}, chosen on val)")
    for column in ("class", "IoU", "Dice", "pixels"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, v in values["per_class"].items():
        table.add_row(escape(name), _number(v["iou"]), _number(v["dice"]), str(v["pixels"]))
    for key in ("mean_iou", "mean_dice", "pooled_iou", "defective_pooled_iou"):
        table.add_row(key, _number(values[key]), "", "")
    for key in ("auroc", "f1"):
        table.add_row(f"image {key}", _number(metrics[part].get(key)), "", "")
    console.print(table)
    left_out = metrics["segmentation"].get(f"{part}_without_mask")
    if left_out:
        console.print(f"{left_out} anomalous image(s) without a mask left out of the pixel metrics")
    console.print(f"report: [bold]{escape(str(Path(run_dir) / 'report.html'))}[/]")


def _number(value) -> str:
    return "n/a" if value is None or value != value else f"{value:.3f}"
