"""The `defectmine` command (typer + rich): fit, sweep, predict, evaluate, export, pretrain, demo, detectors,
tune, segment, serve, label, prompt-segment and synthesize.

Commands only parse options and call `defectmine.pipeline` / `defectmine.pretrain`; our own errors are
shown as one red line (file and fix), never a traceback.
"""

from defectmine.cli import (  # noqa: F401  (registers the commands)
    commands, detectors, export, label, prompt, segment, serve, synth, tune,
)
from defectmine.cli.app import app, console, err_console

__all__ = ["app", "console", "err_console", "main"]


def main() -> None:  # pragma: no cover - console entry point
    app()
