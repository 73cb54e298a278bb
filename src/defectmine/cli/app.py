"""The Typer app, the consoles, and the wrapper that shows our own errors as one line."""

from __future__ import annotations

import functools
import json

import typer
from rich.console import Console
from rich.markup import escape

from defectmine.errors import DefectmineError

app = typer.Typer(
    add_completion=False,
    rich_markup_mode=None,
    no_args_is_help=True,
    help="Visual inspection when defects are rare: train detectors, score images, get heatmaps and reports.",
)
console = Console()
err_console = Console(stderr=True)


def friendly_errors(func):
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


def parse_params(items: list[str]) -> dict:
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
