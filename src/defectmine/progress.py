"""Progress for every long loop, on stderr (stdout stays clean for results), silenced by quiet.

On a terminal it is a rich progress bar. When stderr is a file or a pipe (logs, CI, `2> run.log`)
it is plain text instead: one line when a loop starts, one each time it passes another
`LINE_EVERY_PERCENT` percent (or 1, 2, 5, 10, 20, ... items when the total is unknown) and at least
`LINE_MIN_SECONDS` after the previous line, one when the status is announced without progress
(e.g. "fitting"), and one when it ends, each with the
count, the status and the times; no carriage returns and no ANSI control sequences. The choice is
made from the stream itself, not from rich's terminal detection: FORCE_COLOR (set by many CI
setups) makes rich animate into files, which is what filled logs with half-drawn bars.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")

#: Plain-text progress writes a line each time a loop passes another this many percent...
LINE_EVERY_PERCENT = 5.0
#: ... but not sooner than this many seconds after its previous line: a loop that takes a second
#: (decoding a few hundred images) needs its first and last line, not twenty.
LINE_MIN_SECONDS = 1.0


def is_interactive(stream: IO | None = None) -> bool:
    """True when `stream` (default: stderr) is a terminal that can redraw a bar in place."""
    stream = sys.stderr if stream is None else stream
    if os.environ.get("TERM", "").lower() in ("dumb", "unknown"):
        return False  # a terminal that cannot move the cursor shows every redraw as new text
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _one_two_five(n: int) -> bool:
    """1, 2, 5, 10, 20, 50, ...: the milestones of a loop of unknown length (lines grow with log n)."""
    while n >= 10 and n % 10 == 0:
        n //= 10
    return n in (1, 2, 5)


@dataclass
class _Task:
    description: str
    total: float | None
    completed: float
    status: str
    started: float
    start_completed: float
    next_line: float = 0.0  # the count at which the next periodic line is due
    last_line: float = 0.0  # clock time of the task's latest line
    finished: bool = False
    fields: dict = field(default_factory=dict)


class LineProgress:
    """The subset of `rich.progress.Progress` the loops use (`add_task`, `update`, `advance`), written
    as plain lines to a stream that is not a terminal; see the module docstring for when lines come."""

    def __init__(self, stream: IO, *, every_percent: float = LINE_EVERY_PERCENT,
                 min_seconds: float = LINE_MIN_SECONDS, clock=time.monotonic):
        self.stream = stream
        self.every = float(every_percent)
        self.min_seconds = float(min_seconds)
        self.clock = clock
        self._tasks: dict[int, _Task] = {}

    def add_task(self, description: str, total: float | None = None, completed: float = 0, **fields) -> int:
        """Start a task and write its first line; returns its id."""
        task_id = len(self._tasks)
        status = str(fields.pop("status", "") or "")
        task = _Task(str(description), total, float(completed), status, self.clock(), float(completed),
                     fields=fields)
        task.next_line = self._after(task, task.completed)
        self._tasks[task_id] = task
        self._write(task)
        return task_id

    def advance(self, task_id: int, advance: float = 1) -> None:
        """Add `advance` to the task's count."""
        self.update(task_id, advance=advance)

    def update(self, task_id: int, *, total: float | None = None, completed: float | None = None,
               advance: float | None = None, description: str | None = None, **fields) -> None:
        """Change a task like `Progress.update`; write a line when a milestone is passed, the task ends,
        or the status changes without any progress (an announcement such as "fitting")."""
        task = self._tasks[task_id]
        before = task.completed
        if total is not None:
            task.total = total
        if description is not None:
            task.description = str(description)
        if completed is not None:
            task.completed = float(completed)
        if advance:
            task.completed += float(advance)
        fields.pop("refresh", None)
        status = fields.pop("status", None)
        announced = status is not None and str(status) != task.status and task.completed == before
        if status is not None:
            task.status = str(status)
        task.fields.update(fields)
        if task.finished:
            return
        done = task.total is not None and task.completed >= task.total
        if task.completed >= task.next_line:
            due = self.clock() - task.last_line >= self.min_seconds
            task.next_line = self._after(task, task.completed)
        else:
            due = False
        if done or announced or due:
            task.finished = done
            self._write(task)

    def stop(self) -> None:
        """Write a last line for every task that has not reached its total (unknown total, or stopped)."""
        for task in self._tasks.values():
            if not task.finished:
                task.finished = True
                self._write(task, ended=True)

    def _after(self, task: _Task, count: float) -> float:
        """The count at which the next periodic line is due."""
        if task.total:
            # whole items, at least one: with 21 fits and 5 % a line per fit, not one every 1.05 fits
            step = max(1, round(task.total * self.every / 100.0))
            return (int(count // step) + 1) * step
        n = int(count) + 1
        while not _one_two_five(n):
            n += 1
        return n

    def _write(self, task: _Task, ended: bool = False) -> None:
        task.last_line = now = self.clock()
        elapsed = now - task.started
        count = f"{task.completed:g}"
        if task.total:
            count += f"/{task.total:g} ({100.0 * task.completed / task.total:.0f}%)"
        times = f"{_clock(elapsed)} elapsed"
        gained = task.completed - task.start_completed
        if task.total and task.completed >= task.total:
            times = f"done in {_clock(elapsed)}"
        elif ended:
            times = f"ended after {_clock(elapsed)}" + ("" if task.total is None else " (not complete)")
        elif task.total and gained > 0:
            times += f", ~{_clock(elapsed / gained * (task.total - task.completed))} left"
        status = " ".join(task.status.split())  # the training loop pads its status with spaces
        line = f"{task.description}: {count}" + (f" {status}" if status else "") + f" [{times}]"
        # whatever the text holds (a path, a loss), keep the log free of control characters
        line = "".join(c if c.isprintable() else " " for c in line)
        self.stream.write(line + "\n")
        self.stream.flush()


@contextmanager
def progress_bar(quiet: bool = False, transient: bool = False, *, stream: IO | None = None):
    """A progress display with a free `status` field: a rich bar (count, elapsed, remaining) on a
    terminal, plain lines (`LineProgress`) when `stream` (default: stderr) is not one."""
    if not quiet and not is_interactive(stream):
        lines = LineProgress(sys.stderr if stream is None else stream, every_percent=LINE_EVERY_PERCENT,
                             min_seconds=LINE_MIN_SECONDS)
        try:
            yield lines
        finally:
            lines.stop()
        return
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True) if stream is None else Console(file=stream),
        disable=quiet,
        transient=transient,
    )
    with bar:
        yield bar


def track(items: Iterable[T], description: str, *, total: int | None = None, quiet: bool = False,
          stream: IO | None = None) -> Iterator[T]:
    """Yield `items` with a progress display (transient on a terminal) unless `quiet`."""
    if quiet:
        yield from items
        return
    if total is None and hasattr(items, "__len__"):
        total = len(items)
    with progress_bar(transient=True, stream=stream) as bar:
        task = bar.add_task(description, total=total, status="")
        for item in items:
            yield item
            bar.advance(task)
