"""Rich progress bars for every long loop, silenced by quiet=True."""

from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@contextmanager
def progress_bar(quiet: bool = False, transient: bool = False):
    """A rich Progress with bar, count, elapsed and remaining time; disabled when quiet."""
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),  # stdout stays clean for results
        disable=quiet,
        transient=transient,
    )
    with bar:
        yield bar
