"""`defectmine tune`: search detector options on validation data only (Optuna), resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from defectmine.cli.app import app, console, friendly_errors
from defectmine.cli.options import ModelOptions, given_options, layered_run_config, with_model_options


@app.command()
@friendly_errors
@with_model_options
def tune(
    ctx: typer.Context,
    options: ModelOptions,
    out: Path = typer.Option(Path("runs/tune"), "--out", "-o", help="Tune folder: study.db, trials.csv, trials.png, best_config.json, tune.json, report.html. Running again with the same folder continues the study."),
    trials: Optional[int] = typer.Option(None, help="Total finished trials of the study, earlier runs in --out included (default 20 unless --minutes is given)."),
    minutes: Optional[float] = typer.Option(None, help="Wall-time budget of this call in minutes (no new trial starts after it)."),
    space: Optional[Path] = typer.Option(None, help="Search space, a YAML or JSON file (option: {low, high, log} or [choices]); default: the detector's space."),
    metric: str = typer.Option("auroc", help="Validation value to maximise: auroc or max_f1."),
    k: Optional[int] = typer.Option(None, "--k", help="Use the first K labelled anomalies (default: all in the training pool; 0: none)."),
    ratio: Optional[str] = typer.Option(None, help="Positive ratio instead of K: 1/1 ... 1/128 or 'unsupervised'."),
    seed: int = typer.Option(0, help="Training seed of every trial, and the seed of the TPE sampler."),
    config: Optional[Path] = typer.Option(None, "--config", help="Start from the run settings in this JSON file (a best_config.json or a run's config.json); options typed here override it."),
    preset: Optional[str] = typer.Option(None, help="Start from a named parameter set, e.g. 'quality'."),
):
    """Search detector options (TPE, median pruning on the validation curve) on validation data only.

    Every trial fits on the training images and is scored on the validation images; test images are
    left out before anything is decoded. The best options are written as best_config.json, which
    `defectmine fit --config` takes.

    \b
    Examples:
      defectmine tune --data my_parts/ --trials 30 --out runs/tune
      defectmine tune --data my_parts/ --trials 50 --out runs/tune   (20 more)
      defectmine tune --data elpv --k 40 --minutes 60 --space space.yaml
      defectmine fit --config runs/tune/best_config.json --out runs/best
    """
    from defectmine.tune import run_tune

    base = layered_run_config(options, given_options(ctx), config_file=config, preset=preset,
                              k=k, ratio=ratio, seed=seed)
    result = run_tune(base, out, n_trials=trials, minutes=minutes, space=space, metric=metric, seed=seed)
    table = Table(title=f"best of {result.n_finished} trial(s)")
    table.add_column("option")
    table.add_column("value", justify="right")
    if result.best_params is None:
        table.add_row("best", "no trial completed")
    else:
        table.add_row(f"val {metric}", f"{result.best_value:.4f}")
        for name, value in result.best_params.items():
            table.add_row(name, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)
    if "best_config" in result.files:
        console.print(f"best config: [bold]{escape(str(result.files['best_config']))}[/] "
                      f"(defectmine fit --config {escape(str(result.files['best_config']))})", soft_wrap=True)
    console.print(f"report: [bold]{escape(str(result.files['report']))}[/]", soft_wrap=True)
