"""The commands: fit, sweep, predict, evaluate, pretrain, demo."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from defectmine.cli.app import app, console, friendly_errors
from defectmine.cli.options import ModelOptions, given_options, layered_run_config, split_list, with_model_options
from defectmine.cli.output import print_metrics, print_sweep
from defectmine.cli.ray_options import RAY, RAY_CPUS, RAY_GPUS, on_ray

DEMO_DETECTOR_PARAMS = {"epochs": 25, "width": 8, "lr": 1e-3, "batch_size": 32}


@app.command()
@friendly_errors
@with_model_options
def fit(
    ctx: typer.Context,
    options: ModelOptions,
    out: Path = typer.Option(Path("runs/fit"), "--out", "-o", help="Run directory to write."),
    k: Optional[int] = typer.Option(None, "--k", help="Use the first K labelled anomalies (default: all in the training pool; 0: none)."),
    ratio: Optional[str] = typer.Option(None, help="Positive ratio instead of K: 1/1 ... 1/128 or 'unsupervised'."),
    seed: int = typer.Option(0, help="Training seed."),
    overwrite: bool = typer.Option(False, help="Replace a non-empty --out (the old run stays until the new one is complete)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Run settings from a JSON file: a `defectmine tune` best_config.json or a run's config.json; options typed here override it."),
    preset: Optional[str] = typer.Option(None, help="A named parameter set, e.g. 'quality' (heavier training); typed options and --config override it."),
):
    """Train a detector and write a run directory (config, split, model, scores, metrics, report).

    Examples:

      defectmine fit --data my_images/ --out runs/tiles

      defectmine fit --data elpv --k 40 --epochs 25 --out runs/elpv-k40

      defectmine fit --data magnetic_tile --ratio 1/16 --backbone resnet18

      defectmine fit --config runs/tune/best_config.json --out runs/best
    """
    from defectmine.pipeline import fit_run

    run_config = layered_run_config(options, given_options(ctx), config_file=config, preset=preset,
                                    k=k, ratio=ratio, seed=seed)
    result = fit_run(run_config, out, overwrite=overwrite)
    print_metrics(result.metrics, result.run_dir)


@app.command()
@friendly_errors
@with_model_options
def sweep(
    options: ModelOptions,
    ratios: Optional[str] = typer.Option(None, help="Positive ratios, comma-separated (deeper-FCDD protocol): 1/1,1/2,...,1/128,unsupervised."),
    ks: Optional[str] = typer.Option(None, "--ks", help="Instead of ratios: numbers of labelled anomalies, comma-separated, e.g. 1,2,5,10,20,40,80."),
    seeds: str = typer.Option("0", help="Training seeds, comma-separated; every point is fitted once per seed."),
    out: Path = typer.Option(Path("runs/sweep"), "--out", "-o", help="Folder for sweep_rows.csv, sweep.csv, sweep.json, sweep.png, report.html."),
    tolerance: float = typer.Option(0.01, help="AUROC gain per doubling of anomalies below which collecting more is over-mining."),
    resume: bool = typer.Option(False, help="Keep the finished fits of an interrupted sweep in --out (same settings) and run the rest."),
    ray: Optional[str] = RAY,
    ray_cpus: float = RAY_CPUS,
    ray_gpus: float = RAY_GPUS,
):
    """Damage-mining sweep: fit at several numbers of labelled anomalies and say whether more are worth collecting.

    Every point (a positive ratio or a K) is fitted once per seed on the same split, thresholded on val and scored on test; the AUROC curve is split into a "mining opportunity" phase (still gaining at least --tolerance AUROC per doubling of anomalies) and an "over-mining" phase (not any more). Writes sweep_rows.csv (after every fit), sweep.csv, sweep.json, sweep.png and report.html.

    Examples:

    \b
      defectmine sweep --data elpv --ratios 1/16,1/32,1/64,1/128,unsupervised \\
          --seeds 0,1,2 --out runs/sweep

    \b
      defectmine sweep --data magnetic_tile --ks 1,2,5,10,20,40,80 \\
          --seeds 0,1,2 --epochs 25

    \b
      defectmine sweep --data my_images/ --ks 5,10,20 --detector fcdd \\
          --backbone resnet18 --resume
    """
    from defectmine.pipeline import run_sweep

    sweep_on = run_sweep if ray is None else on_ray("sweep", ray, ray_cpus, ray_gpus)
    result = sweep_on(
        options.run_config(), ratios=split_list(ratios, "--ratios"), ks=split_list(ks, "--ks", int),
        seeds=split_list(seeds, "--seeds", int), out_dir=out, tolerance=tolerance, resume=resume,
        quiet=options.quiet,
    )
    print_sweep(result)


@app.command()
@friendly_errors
def predict(
    model: Path = typer.Option(..., "--model", "-m", help="Saved model folder (a run's model/), or a file from `defectmine export` (model.onnx runs without torch)."),
    data: str = typer.Option(..., "--data", "-d", help="Folder of images (any layout; every image in every sub-folder is scored), CSV manifest, or one image."),
    out: Path = typer.Option(Path("predictions"), "--out", "-o", help="Output folder: scores.csv, overlays/, skipped.csv, predict.json. Must be empty or new (see --overwrite)."),
    threshold: Optional[float] = typer.Option(None, help="Decision threshold (default: the run's, when the model sits in a run)."),
    overlays: bool = typer.Option(True, help="Write heatmap overlays."),
    overlay_size: int = typer.Option(2048, help="Longest side of an overlay in pixels (larger images are shown smaller)."),
    display_quantile: Optional[float] = typer.Option(None, help="Heatmap display range [min, q*max] of the run's validation maps (or of the first batch for a bare model); default: the run's q, else 0.25."),
    batch_size: Optional[int] = typer.Option(None, help="Images scored at once (default: the model's)."),
    workers: int = typer.Option(0, help="Processes that decode images (0: decode in this one)."),
    skip_bad: bool = typer.Option(False, help="Skip unreadable images: list them in skipped.csv and go on."),
    overwrite: bool = typer.Option(False, help="Replace an earlier predict's outputs in --out (kept until the new ones are complete)."),
    heatmap: str = typer.Option("native", help="Overlay heatmaps: native (the detector's maps) or gradcam."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
    ray: Optional[str] = RAY,
    ray_cpus: float = RAY_CPUS,
    ray_gpus: float = RAY_GPUS,
):
    """Score a folder of images: scores.csv plus heatmap overlays, in constant memory.

    Example: defectmine predict --model runs/tiles/model --data new_images/ --out preds/
    """
    from defectmine.export.metadata import format_of

    if format_of(model) is not None:  # an exported file: onnxruntime, threshold from the file
        from defectmine.export import predict_exported as predict_folder
    else:
        from defectmine.pipeline import predict_folder

    predict_on = predict_folder if ray is None else on_ray("predict", ray, ray_cpus, ray_gpus)
    s = predict_on(model, data, out, threshold=threshold, display_quantile=display_quantile,
                   overlays=overlays, overlay_size=overlay_size, batch_size=batch_size, workers=workers,
                   skip_bad=skip_bad, overwrite=overwrite, quiet=quiet, heatmap=heatmap)
    rate = s.n_scored / s.seconds if s.seconds else float("nan")
    console.print(f"scored [bold]{s.n_scored}[/] of {s.n_listed} image(s) in {s.seconds:.1f} s ({rate:.1f}/s)")
    if s.threshold is not None:
        source = {"run": "from the run", "exported model": "from the exported model"}.get(s.threshold_source, "given")
        console.print(f"predicted anomalous: {s.n_predicted_anomalous} (threshold {s.threshold:.4g}, {source})")
    if s.n_skipped or s.n_duplicates:
        parts = [f"{s.n_skipped} unreadable"] * bool(s.n_skipped) + [
            f"{s.n_duplicates} duplicate path(s) of files scored once"] * bool(s.n_duplicates)
        console.print(f"[yellow]not scored:[/] {', '.join(parts)} - see [bold]{escape(str(s.skipped_csv))}[/]")
    if s.overlays is not None:
        lo, hi = s.display_range
        console.print(f"overlays: [bold]{escape(str(s.overlays))}[/] (display range {lo:.4g}..{hi:.4g} from the "
                      f"{s.display_source}; longest side <= {s.overlay_max_side} px)")
    console.print(f"scores: [bold]{escape(str(s.scores_csv))}[/]")


@app.command()
@friendly_errors
def evaluate(
    run: Path = typer.Argument(..., help="Run directory written by `defectmine fit`."),
    threshold_rule: Optional[str] = typer.Option(None, help="Override: max_f1, mean_std or fixed."),
    threshold_k: Optional[float] = typer.Option(None),
    threshold_value: Optional[float] = typer.Option(None),
    data_root: Optional[Path] = typer.Option(None, help="Folder the run's images moved to (split.csv paths are relative to the data root recorded at fit)."),
    heatmap: str = typer.Option("native", help="Report heatmaps: native (the detector's maps) or gradcam."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Re-score a run's validation and test images; rewrite metrics.json and report.html.

    \b
    Examples:
      defectmine evaluate runs/tiles --threshold-rule mean_std --threshold-k 3
      defectmine evaluate runs/tiles --heatmap gradcam
    """
    from defectmine.pipeline import evaluate_run

    result = evaluate_run(run, threshold_rule=threshold_rule, threshold_k=threshold_k,
                          threshold_value=threshold_value, quiet=quiet, data_root=data_root, heatmap=heatmap)
    print_metrics(result.metrics, result.run_dir)


@app.command()
@friendly_errors
def pretrain(
    data: str = typer.Option(..., "--data", "-d", help="Folder of images (any layout), CSV manifest, built-in set, or several joined by '+' (magnetic_tile+elpv)."),
    out: Path = typer.Option(Path("runs/pretrain"), "--out", "-o", help="Output folder: backbone.safetensors, pretrain.json, checkpoint/."),
    method: Optional[str] = typer.Option(None, help="mim (masked image modelling, CNN), mae (masked autoencoder, vit_tiny) or simsiam (default: the measured best)."),
    backbone: Optional[str] = typer.Option(None, help="Backbone to pretrain (default: the method's own: cnn, or vit_tiny for mae)."),
    width: Optional[int] = typer.Option(None, help="Base width of the cnn/vit_tiny backbone (default: the detectors' default, so the weights load as they are)."),
    stride: int = typer.Option(8, help="Output stride of the backbone."),
    image_size: int = typer.Option(128, help="Images are resized to SIZE x SIZE (use the size you will fit with)."),
    channels: int = typer.Option(1, help="1 (grayscale) or 3 (RGB)."),
    epochs: int = typer.Option(20, help="Pretraining epochs (a finished run continues when asked for more)."),
    batch_size: int = typer.Option(32, help="Batch size."),
    lr: Optional[float] = typer.Option(None, help="Learning rate (default: the method's)."),
    init_weights: Optional[str] = typer.Option(None, help="Hierarchical pretraining: start from these weights (file, earlier OUT folder, or 'pretrained')."),
    resume: bool = typer.Option(True, help="Continue from the checkpoint in OUT when there is one."),
    seed: int = typer.Option(0, help="Seed."),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu or cuda."),
    skip_bad: bool = typer.Option(False, help="Skip unreadable images (and list them)."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Self-supervised pretraining of a backbone on unlabelled images; every detector can start from it.

    Labels are never used; built-in sets and split manifests contribute their training images only.

    Examples:

      defectmine pretrain --data magnetic_tile+elpv --out runs/ours --epochs 20

    \b
      defectmine pretrain --data my_line_images/ --init-weights runs/ours \\
          --out runs/ours-line

    \b
      defectmine fit --data my_parts/ \\
          --backbone-weights runs/ours/backbone.safetensors
    """
    from defectmine.pretrain.command import pretrain_command

    optional = {"method": method, "backbone": backbone, "width": width, "lr": lr}
    result = pretrain_command(
        data, out, stride=stride, image_size=image_size, channels=channels, epochs=epochs, batch_size=batch_size,
        init_weights=init_weights, resume=resume, seed=seed, device=device, skip_bad=skip_bad, quiet=quiet,
        **{key: value for key, value in optional.items() if value is not None},
    )
    console.print(f"weights: [bold]{result.weights}[/] (pretrain.json beside it)")


@app.command()
@friendly_errors
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Run directory to write."),
    epochs: int = typer.Option(DEMO_DETECTOR_PARAMS["epochs"], help="Training epochs."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """FCDD on the ELPV solar cells, 40 labelled defects, fixed benchmark split (about 5 minutes on 2 CPU cores)."""
    from defectmine.pipeline import RunConfig, fit_run

    console.print("[bold]defectmine demo[/]: deeper FCDD on ELPV (fixed split, K = 40 labelled defects)")
    params = {**DEMO_DETECTOR_PARAMS, "epochs": epochs}
    config = RunConfig(data="elpv", detector="fcdd", detector_params=params, k=40, quiet=quiet)
    result = fit_run(config, out, overwrite=True)  # a demo re-runs into the same folder
    print_metrics(result.metrics, result.run_dir)
