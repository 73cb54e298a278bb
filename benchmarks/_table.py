"""Shared helpers of the benchmark scripts: machine description and BENCHMARKS.md sections."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path


def machine_description() -> str:
    import torch

    from defectmine.pipeline.runinfo import cpu_model

    cpu = cpu_model()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores ({cpu}), {gpu}, torch {torch.__version__}, code {code_version()}"


def split_code(description: str) -> tuple[str, str | None]:
    """A `machine_description()` split into (machine, code version); (description, None) without one."""
    machine, found, code = description.rpartition(", code ")
    return (machine, code) if found else (description, None)


def machines_summary(descriptions) -> str:
    """`machine_description()`s of kept rows, one entry per machine with its code versions listed once:
    "2 CPU cores (...), no GPU, torch 2.14.1 (code 01c2a49, 13b47af); 16 CPU cores (...) (code bd7c846)"."""
    codes: dict[str, list[str]] = {}
    for description in sorted(set(descriptions)):
        machine, code = split_code(description)
        codes.setdefault(machine, []).extend([code] if code else [])
    return "; ".join(machine + (f" (code {', '.join(versions)})" if versions else "")
                     for machine, versions in codes.items())


def code_version() -> str:
    """The commit the benchmark ran on (with '+dirty' when the tree had uncommitted changes).

    $DEFECTMINE_CODE_VERSION stands in where the checkout has no .git (a copy sent to a GPU machine)."""
    if os.environ.get("DEFECTMINE_CODE_VERSION"):
        return os.environ["DEFECTMINE_CODE_VERSION"]

    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True,
                                text=True, check=True).stdout.strip()
        # Code only: the scripts themselves rewrite BENCHMARKS.md and benchmarks/results/.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "src", "*.py",
                                "pyproject.toml"], cwd=repo, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def replace_section(path: Path, key: str, heading: str, body: str) -> None:
    """Write `body` between <!-- key:start --> and <!-- key:end --> in `path` (appending if absent)."""
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    block = f"{start}\n## {heading}\n\n{body}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n\nEvery number here is written by a script in `benchmarks/`.\n"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def run_in_parallel(function, jobs: list, n_jobs: int = 1) -> list:
    """`[function(job) for job in jobs]`, with up to `n_jobs` running at once (threads that wait on
    subprocesses). Results keep the order of `jobs`."""
    if n_jobs <= 1:
        return [function(job) for job in jobs]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=n_jobs) as pool:
        return list(pool.map(function, jobs))


def subprocess_env(n_jobs: int = 1) -> dict:
    """Environment for one benchmark subprocess: no display, the CPU cores shared out among the
    `n_jobs` processes running side by side (torch would otherwise start one thread per core in each),
    unless OMP_NUM_THREADS is set already, and the code version pinned as the fit starts.

    The subprocess writes its row when its fit ends, hours later for a large backbone on a CPU; reading
    the commit then would credit the row to whatever was committed in between."""
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // max(1, n_jobs)))
    return {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
            "DEFECTMINE_CODE_VERSION": code_version()}


class FitFailed(RuntimeError):
    """A benchmark subprocess exited with an error; the message ends with its stderr."""


def kept_row(path: Path, script: str, args: list[str], env: dict, extra: dict | None = None) -> tuple[dict, bool]:
    """The row of one configuration, and whether it ran now: read from `path` when it ran before, else
    `python script *args` runs in a subprocess (its last stdout line is the row as JSON; `extra` is added
    to it) and the row is kept at `path`, so that an interrupted benchmark continues where it stopped."""
    if path.is_file():
        return json.loads(path.read_text()), False
    proc = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, env=env)
    if proc.returncode:
        raise FitFailed(f"{path.name} failed:\n{proc.stderr[-3000:]}")
    row = {**json.loads(proc.stdout.strip().splitlines()[-1]), **(extra or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row, indent=2))
    return row, True


SPEED_SAMPLE = 64  # images timed for ms_per_image_*


def score_speed(score, images, sync=None) -> dict:
    """Milliseconds per image of `score(images, batch_size)` at batch 32 and at batch 1, on up to
    SPEED_SAMPLE images, each after one warm-up call. `sync()` (e.g. torch.cuda.synchronize) runs
    before each clock reading so that queued GPU work is counted."""
    sample = images[:SPEED_SAMPLE]
    sync = sync or (lambda: None)
    timings = {}
    for batch in (32, 1):
        score(sample[:batch], batch)
        sync()
        started = time.perf_counter()
        score(sample, batch)
        sync()
        timings[f"ms_per_image_b{batch}"] = 1000 * (time.perf_counter() - started) / len(sample)
    return timings


def update_summary(folder: Path, values: dict) -> Path:
    """Merge `values` into `folder`/summary.json (created when missing), keeping the keys other scripts
    wrote there: several scripts of one issue (e.g. export, serve and Ray for `ship`) share one summary."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "summary.json"
    current = json.loads(path.read_text()) if path.is_file() else {}
    current.update(values)
    path.write_text(json.dumps(current, indent=2) + "\n")
    return path


def mean_std_cell(values, digits: int = 3, empty: str = "n/a") -> str:
    """A table cell "mean ± std" over seeds (the library's aggregate; None values left out), or `empty`."""
    from defectmine.evaluation import aggregate, format_mean_std

    values = [v for v in values if v is not None]
    return format_mean_std(aggregate([{"v": v} for v in values])["v"], digits) if values else empty
