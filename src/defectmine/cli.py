"""The `defectmine` command: fit, sweep, predict, evaluate, pretrain, demo, detectors."""

from __future__ import annotations

import functools
import inspect
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from defectmine.errors import DefectmineError

app = typer.Typer(
    add_completion=False,
    rich_markup_mode=None,
    no_args_is_help=True,
    help="Visual inspection when defects are rare: train detectors, score images, get heatmaps and reports.",
)
console = Console()
err_console = Console(stderr=True)

DEMO_DETECTOR_PARAMS = {"epochs": 25, "width": 8, "lr": 1e-3, "batch_size": 32}


def _friendly_errors(func):
    """Show our own errors as one red line (file and fix), not a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except DefectmineError as err:
            # soft_wrap: paths in messages must stay whole (copyable); escape: they may hold [brackets]
            err_console.print(f"[bold red]error:[/] {escape(str(err))}", soft_wrap=True, highlight=False)
            raise typer.Exit(code=2) from None

    return wrapper


def _parse_params(items: list[str]) -> dict:
    """--param key=value pairs; values are parsed as JSON when they can be (numbers, true, null)."""
    from defectmine.errors import ConfigError

    params = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--param {item!r}: expected key=value, e.g. --param epochs=10.")
        key, value = item.split("=", 1)
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def print_metrics(metrics: dict, run_dir: Path | None = None) -> None:
    """A table of the test (or val) metrics, and where the report is."""
    part = "test" if metrics.get("test") else "val"
    table = Table(title=f"{part} metrics (threshold: {metrics['threshold']['rule']} = {metrics['threshold']['value']:.4g})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("auroc", "auprc", "f1", "precision", "recall", "accuracy"):
        value = metrics[part].get(key)
        table.add_row(key, "n/a" if value is None else f"{value:.3f}")
    for key, value in (metrics.get("test_pixel") or {}).items():
        if isinstance(value, float):
            table.add_row(f"pixel {key}", f"{value:.3f}")
    timing = metrics.get("timing", {})
    if timing.get("fit_seconds") is not None:
        table.add_row("fit seconds", f"{timing['fit_seconds']:.1f}")
    table.add_row("score ms/image", f"{timing.get('score_ms_per_image', float('nan')):.2f}")
    console.print(table)
    if run_dir is not None:
        console.print(f"report: [bold]{Path(run_dir) / 'report.html'}[/]")


@dataclass
class ModelOptions:
    """The options `fit` and `sweep` share (data, detector and its parameters, images, threshold); one
    list, so that both commands offer the same model options with the same defaults and help."""

    data: str
    detector: str
    backbone: str
    backbone_weights: Optional[str]
    freeze_backbone: bool
    epochs: int
    image_size: int
    channels: int
    resize: str
    threshold_rule: str
    threshold_k: float
    threshold_value: Optional[float]
    split_seed: int
    device: str
    param: list[str]
    skip_bad: bool
    quiet: bool

    def run_config(self, **run):
        """A RunConfig from these options; `run` adds the command's own fields (k, ratio, seed)."""
        from defectmine.pipeline import RunConfig

        params = {"backbone": self.backbone, "backbone_weights": self.backbone_weights, "epochs": self.epochs,
                  "device": self.device}
        if self.freeze_backbone:  # only when asked: a detector without a backbone has no such option
            params["freeze_backbone"] = True
        params.update(_parse_params(self.param))
        return RunConfig(
            data=self.data, detector=self.detector, detector_params=params, image_size=self.image_size,
            channels=self.channels, resize=self.resize, split_seed=self.split_seed, threshold_rule=self.threshold_rule,
            threshold_k=self.threshold_k, threshold_value=self.threshold_value, skip_bad=self.skip_bad,
            quiet=self.quiet, **run,
        )


_MODEL_OPTIONS = {  # name -> (type, typer option); the fields of ModelOptions
    "data": (str, typer.Option(..., "--data", "-d", help="Folder (normal/, anomalous/<class>/, masks/), CSV manifest, or built-in set: magnetic_tile, elpv.")),
    "detector": (str, typer.Option("fcdd", help="Detector name (`defectmine detectors` lists them).")),
    "backbone": (str, typer.Option("cnn", help="'cnn' (from scratch) or a timm name: resnet18, vgg16, inception_v3, ...")),
    "backbone_weights": (Optional[str], typer.Option(None, help="Local weights file, or 'pretrained' (timm hub; needs network).")),
    "freeze_backbone": (bool, typer.Option(False, help="Keep the backbone's weights fixed and train only the head (frozen features, e.g. of --backbone-weights); default: fine-tune all.")),
    "epochs": (int, typer.Option(25, help="Training epochs.")),
    "image_size": (int, typer.Option(128, help="Images are resized to SIZE x SIZE.")),
    "channels": (int, typer.Option(1, help="1 (grayscale) or 3 (RGB).")),
    "resize": (str, typer.Option("stretch", help="'stretch' or 'pad' (keep aspect ratio).")),
    "threshold_rule": (str, typer.Option("max_f1", help="max_f1 (on val), mean_std (val normals), or fixed.")),
    "threshold_k": (float, typer.Option(3.0, help="k of the mean_std rule.")),
    "threshold_value": (Optional[float], typer.Option(None, help="Value of the fixed rule.")),
    "split_seed": (int, typer.Option(0, help="Seed of the split when the data carries none.")),
    "device": (str, typer.Option("auto", help="auto (CUDA when present), cpu or cuda.")),
    "param": (list[str], typer.Option([], "--param", "-p", metavar="KEY=VALUE", help="Detector option (repeatable), e.g. -p lr=0.0005; `defectmine detectors` lists every detector's options and defaults.")),
    "skip_bad": (bool, typer.Option(False, help="Skip unreadable images (and list them) instead of stopping.")),
    "quiet": (bool, typer.Option(False, "--quiet", "-q", help="No progress bars.")),
}  # fmt: skip
assert list(_MODEL_OPTIONS) == [f.name for f in fields(ModelOptions)]


def _with_model_options(func):
    """Give a command the shared model options: its `options: ModelOptions` parameter is replaced, in
    the command line, by one option per field, and the command receives them gathered."""
    signature = inspect.signature(func, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "options"]
    shared = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
              for name, (kind, option) in _MODEL_OPTIONS.items()]
    keyword_own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]

    @functools.wraps(func)
    def wrapper(**kwargs):
        options = ModelOptions(**{name: kwargs.pop(name) for name in _MODEL_OPTIONS})
        return func(options=options, **kwargs)

    # data first (as before), then the command's own options, then the shared model options
    wrapper.__signature__ = signature.replace(parameters=shared[:1] + keyword_own + shared[1:])
    wrapper.__annotations__ = {p.name: p.annotation for p in wrapper.__signature__.parameters.values()}
    return wrapper


@app.command()
@_friendly_errors
@_with_model_options
def fit(
    options: ModelOptions,
    out: Path = typer.Option(Path("runs/fit"), "--out", "-o", help="Run directory to write."),
    k: Optional[int] = typer.Option(None, "--k", help="Use the first K labelled anomalies (default: all in the training pool; 0: none)."),
    ratio: Optional[str] = typer.Option(None, help="Positive ratio instead of K: 1/1 ... 1/128 or 'unsupervised'."),
    seed: int = typer.Option(0, help="Training seed."),
    overwrite: bool = typer.Option(False, help="Replace a non-empty --out (the old run stays until the new one is complete)."),
):
    """Train a detector and write a run directory (config, split, model, scores, metrics, report).

    Examples:

      defectmine fit --data my_images/ --out runs/tiles

      defectmine fit --data elpv --k 40 --epochs 25 --out runs/elpv-k40

      defectmine fit --data magnetic_tile --ratio 1/16 --backbone resnet18
    """
    from defectmine.pipeline import fit_run

    result = fit_run(options.run_config(k=k, ratio=ratio, seed=seed), out, overwrite=overwrite)
    print_metrics(result.metrics, result.run_dir)


def _split_list(text: str | None, option: str, cast=str) -> list | None:
    """A comma-separated option value as a list (None when the option is absent)."""
    from defectmine.errors import ConfigError

    if text is None:
        return None
    items = [item.strip() for item in text.split(",") if item.strip()]
    try:
        return [cast(item) for item in items]
    except ValueError:
        bad = next(item for item in items if not _castable(item, cast))
        raise ConfigError(f"{option}: {bad!r} is not a whole number; pass a comma-separated list such as "
                          f"{option} {'0,1,2' if option == '--seeds' else '1,2,5,10,20,40,80'}.") from None


def _castable(item: str, cast) -> bool:
    try:
        cast(item)
    except ValueError:
        return False
    return True


def print_sweep(result) -> None:
    """The sweep's summary table, its recommendation and where its files are."""
    from defectmine.report.sweep import display_rows

    rows = display_rows(result.summary)
    # the columns that fit 80 characters; the report and sweep.csv have all of them
    columns = ["point", "anomalies", "AUROC", "F1", "phase"]
    table = Table(title=f"mining sweep ({len(result.rows)} fits; test metrics, mean ± std over seeds)")
    for column in columns:
        table.add_column(column, justify="left" if column in ("point", "phase") else "right", no_wrap=column != "phase")
    for row in rows:
        table.add_row(*(str(row[c]) for c in columns))
    console.print(table)
    console.print(f"[bold]recommendation:[/] {escape(result.recommendation)}", soft_wrap=True)
    console.print(f"report: [bold]{result.files['report']}[/]")


@app.command()
@_friendly_errors
@_with_model_options
def sweep(
    options: ModelOptions,
    ratios: Optional[str] = typer.Option(None, help="Positive ratios, comma-separated (deeper-FCDD protocol): 1/1,1/2,...,1/128,unsupervised."),
    ks: Optional[str] = typer.Option(None, "--ks", help="Instead of ratios: numbers of labelled anomalies, comma-separated, e.g. 1,2,5,10,20,40,80."),
    seeds: str = typer.Option("0", help="Training seeds, comma-separated; every point is fitted once per seed."),
    out: Path = typer.Option(Path("runs/sweep"), "--out", "-o", help="Folder for sweep_rows.csv, sweep.csv, sweep.json, sweep.png, report.html."),
    tolerance: float = typer.Option(0.01, help="AUROC gain per doubling of anomalies below which collecting more is over-mining."),
    resume: bool = typer.Option(False, help="Keep the finished fits of an interrupted sweep in --out (same settings) and run the rest."),
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

    result = run_sweep(
        options.run_config(), ratios=_split_list(ratios, "--ratios"), ks=_split_list(ks, "--ks", int),
        seeds=_split_list(seeds, "--seeds", int), out_dir=out, tolerance=tolerance, resume=resume,
        quiet=options.quiet,
    )
    print_sweep(result)


@app.command()
@_friendly_errors
def predict(
    model: Path = typer.Option(..., "--model", "-m", help="Saved model folder (a run's model/)."),
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
):
    """Score a folder of images: scores.csv plus heatmap overlays, in constant memory.

    Example: defectmine predict --model runs/tiles/model --data new_images/ --out preds/
    """
    from defectmine.pipeline import predict_folder

    s = predict_folder(model, data, out, threshold=threshold, display_quantile=display_quantile,
                       overlays=overlays, overlay_size=overlay_size, batch_size=batch_size, workers=workers,
                       skip_bad=skip_bad, overwrite=overwrite, quiet=quiet, heatmap=heatmap)
    rate = s.n_scored / s.seconds if s.seconds else float("nan")
    console.print(f"scored [bold]{s.n_scored}[/] of {s.n_listed} image(s) in {s.seconds:.1f} s ({rate:.1f}/s)")
    if s.threshold is not None:
        source = "from the run" if s.threshold_source == "run" else "given"
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
@_friendly_errors
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
@_friendly_errors
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
@_friendly_errors
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


@app.command()
@_friendly_errors
def detectors(name: Optional[str] = typer.Argument(None, help="Only this detector, with full descriptions.")):
    """List the registered detectors and their -p options: name, type, default and meaning."""
    from defectmine.cli_detectors import print_detectors

    flags = {field: "--" + field.replace("_", "-") for field in _MODEL_OPTIONS} | {"seed": "--seed (sweep: --seeds)"}
    print_detectors(console, name, flags=flags)


def main() -> None:  # pragma: no cover - console entry point
    app()
