"""The `defectmine` command (typer + rich): fit, sweep, predict, evaluate, pretrain, demo, detectors, tune.

Commands only parse options and call `defectmine.pipeline` / `defectmine.pretrain`; our own errors are
shown as one red line (file and fix), never a traceback.
"""

from defectmine.cli import commands, detectors, label, prompt, segment, serve, synth, tune  # noqa: F401  (registers the commands on `app`)
from defectmine.cli.app import app, console, err_console

__all__ = ["app", "console", "err_console", "main"]


def main() -> None:  # pragma: no cover - console entry point
    app()
