"""Rich progress bars for every long loop, on stderr (stdout stays clean for results), silenced by quiet."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")


@contextmanager
def progress_bar(quiet: bool = False, transient: bool = False):
    """A rich Progress with bar, count, a free `status` field, elapsed and remaining time."""
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=quiet,
        transient=transient,
    )
    with bar:
        yield bar


def track(items: Iterable[T], description: str, *, total: int | None = None, quiet: bool = False) -> Iterator[T]:
    """Yield `items` with a transient progress bar unless `quiet`."""
    if quiet:
        yield from items
        return
    if total is None and hasattr(items, "__len__"):
        total = len(items)
    with progress_bar(transient=True) as bar:
        task = bar.add_task(description, total=total, status="")
        for item in items:
            yield item
            bar.advance(task)
