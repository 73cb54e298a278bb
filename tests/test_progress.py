"""Progress output: a rich bar on a terminal, plain informative lines when stderr is a file or a pipe."""

import io
import re

import pytest
from rich.progress import Progress

import defectmine.progress as progress
from defectmine.progress import LineProgress, is_interactive, progress_bar, track


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def every_line(monkeypatch):
    """No minimum time between lines, so that milestones alone decide (the tests run in microseconds)."""
    monkeypatch.setattr(progress, "LINE_MIN_SECONDS", 0.0)


def _assert_plain(text):
    assert text and text.endswith("\n")
    assert "\r" not in text and "\x1b" not in text
    assert all(line.isprintable() for line in text.splitlines())


def test_training_loop_to_a_file_is_plain_lines_with_counts_and_status(every_line, monkeypatch):
    monkeypatch.setenv("FORCE_COLOR", "1")  # what made rich animate into log files
    out = io.StringIO()
    with progress_bar(stream=out) as bar:
        task = bar.add_task("training", total=100, status="")
        for step in range(100):
            bar.update(task, advance=1, status=f"epoch {step // 10 + 1}/10 loss {1 / (step + 1):.4f}   ")
    text = out.getvalue()
    _assert_plain(text)
    lines = text.splitlines()
    assert lines[0].startswith("training: 0/100 (0%)")
    assert 10 <= len(lines) <= 22  # one every 5 %, not one per step
    assert "training: 50/100 (50%) epoch 5/10 loss 0.0200 [" in text
    assert re.fullmatch(r"training: 100/100 \(100%\) epoch 10/10 loss 0\.0100 \[done in \d+:\d\d:\d\d\]", lines[-1])
    assert "left]" in text  # the remaining time while it runs


def test_track_to_a_non_terminal_says_what_it_does_and_when_it_is_done(every_line):
    out = io.StringIO()
    assert list(track(range(40), "decoding images", stream=out)) == list(range(40))
    text = out.getvalue()
    _assert_plain(text)
    lines = text.splitlines()
    assert lines[0].startswith("decoding images: 0/40 (0%)")
    assert lines[-1].startswith("decoding images: 40/40 (100%) [done in ")
    assert len(lines) <= 22


def test_track_of_unknown_length_reports_milestones_and_the_final_count(every_line):
    out = io.StringIO()
    list(track(iter(range(37)), "reading", stream=out))
    text = out.getvalue()
    _assert_plain(text)
    counts = [int(re.match(r"reading: (\d+)", line).group(1)) for line in text.splitlines()]
    assert counts == [0, 1, 2, 5, 10, 20, 37]
    assert "ended after" in text.splitlines()[-1]


def test_status_announced_without_progress_gets_its_own_line(every_line):
    out = io.StringIO()
    with progress_bar(stream=out) as bar:
        task = bar.add_task("mining sweep", total=4, completed=2, status="")
        bar.update(task, status="K=5 seed 0: fitting")
        bar.update(task, advance=1, status="K=5 seed 0: AUROC 0.812")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("mining sweep: 2/4 (50%)")
    assert lines[1].startswith("mining sweep: 2/4 (50%) K=5 seed 0: fitting")
    assert lines[2].startswith("mining sweep: 3/4 (75%) K=5 seed 0: AUROC 0.812")
    assert lines[-1].startswith("mining sweep: 3/4 (75%)") and "not complete" in lines[-1]


def test_lines_wait_for_the_minimum_time_but_start_end_and_announcements_do_not():
    out, clock = io.StringIO(), FakeClock()
    lines = LineProgress(out, every_percent=10, min_seconds=5.0, clock=clock)
    task = lines.add_task("training", total=10)
    for _ in range(9):
        clock.now += 1.0
        lines.advance(task)
    lines.update(task, status="validating")  # an announcement comes at once
    clock.now += 1.0
    lines.advance(task)
    counts = [line.split()[1] for line in out.getvalue().splitlines()]
    # 1 s per step and 5 s between periodic lines: 5/10 (5 s after the start), then not 6..9 (too soon)
    assert counts == ["0/10", "5/10", "9/10", "10/10"]


def test_quiet_writes_nothing_and_terminals_get_the_rich_bar(monkeypatch):
    out = io.StringIO()
    with progress_bar(quiet=True, stream=out) as bar:
        bar.update(bar.add_task("training", total=3, status=""), advance=3)
    assert list(track(range(3), "decoding", quiet=True, stream=out)) == [0, 1, 2]
    assert out.getvalue() == ""
    monkeypatch.setenv("TERM", "xterm")
    with progress_bar(stream=FakeTerminal()) as bar:
        assert isinstance(bar, Progress)
    assert is_interactive(FakeTerminal()) and not is_interactive(io.StringIO())
    monkeypatch.setenv("TERM", "dumb")
    assert not is_interactive(FakeTerminal())
