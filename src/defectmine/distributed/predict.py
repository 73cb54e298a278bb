"""`predict --ray`: score a folder as Ray tasks, with the same outputs as `predict` in one process.

The driver does everything `predict_folder` does around the scoring (options, listing, threshold,
display range, the staging folder and moving the outputs into place): only its scoring step is
replaced. That step

1. fixes the overlays' display range before anything is distributed: the run's validation range
   (as always), or, for a bare model, the range of the first batch of the listing, scored here in
   the driver; so every share draws with the one range one process would use;
2. cuts the listing into contiguous shares, one per task slot of the cluster, each a whole number of
   batches, so each task's batches are the batches one process scores;
3. runs one Ray task per share: it loads the model once and streams its share through predict's own
   streaming scorer into its part folder (scores.csv, skipped.csv, overlays/ named by the position
   in the whole listing);
4. merges the parts in listing order into scores.csv, skipped.csv and overlays/ of the staging folder.

scores.csv is then the one a single process writes (the tests and benchmarks/ship_ray.py compare
them byte for byte). The model, the images and --out must be reachable under the same paths from
every node: on a real cluster, a shared filesystem.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from defectmine.data._messages import MAX_LISTED
from defectmine.distributed.cluster import TaskResources, ray_session, results_as_done, task_slots
from defectmine.errors import ConfigError
from defectmine.pipeline import predict as predict_module
from defectmine.pipeline.predict import (  # predict's own steps: one scorer, one writer, one range rule
    OVERLAY_DIR,
    SCORES_FILE,
    SKIPPED_FILE,
    PredictSummary,
    _range,
    _score_stream,
    nothing_readable,
    predict_folder,
    stream_batches,
)
from defectmine.pipeline.predict_inputs import DecodedFiles, Listing

PARTS_DIR = "ray-parts"


def predict_folder_ray(model_dir: Path, data: str, out_dir: Path, *, address: str = "auto",
                       tasks: int | None = None, resources: TaskResources | None = None,
                       **options) -> PredictSummary:
    """`predict_folder` with the scoring spread over Ray tasks; the same outputs (see the module docstring).

    address: "auto" (this machine's cluster, else a local Ray) or the head's HOST:6379 / ray://HOST:10001;
        a Ray session this program started already is used as it is.
    tasks: number of shares (default: as many as the cluster runs at once with `resources`, at most
        one per batch).
    resources: cores and GPUs each task asks for (default one core, no GPU).
    options: those of `predict_folder` (threshold, overlays, batch_size, skip_bad, ...); `workers`
        (decoding processes) is not used: each task decodes its own share.
    """
    if tasks is not None and int(tasks) < 1:
        raise ConfigError(f"predict_folder_ray(tasks={tasks}): must be at least 1 (or None: one per task slot).")
    step = RayScoreStream(Path(model_dir), address, tasks, resources or TaskResources())
    return predict_folder(model_dir, data, out_dir, score_stream=step, **options)


class RayScoreStream:
    """predict_folder's scoring step, run as Ray tasks (called like `_score_stream`)."""

    def __init__(self, model_dir: Path, address: str, tasks: int | None, resources: TaskResources) -> None:
        self.model_dir, self.address, self.tasks, self.resources = model_dir, address, tasks, resources

    def __call__(self, detector, found: Listing, stage: Path, summary: PredictSummary, *, quantile: float,
                 batch_size: int, workers: int, skip_bad: bool, quiet: bool, heatmap: str = "native") -> None:
        from defectmine.progress import progress_bar

        with ray_session(self.address) as ray:
            slots = task_slots(ray, self.resources)  # also: a task no node can run fails now, not never
            n_tasks = self.tasks or slots
            shares = split_shares(len(found.items), batch_size, n_tasks)
            if summary.display_range is None:
                first = first_batch_range(detector, found, summary.overlay_max_side, batch_size, quantile)
                if first is not None:
                    summary.display_range, summary.display_source = first, "first batch"
            parts = stage / PARTS_DIR
            options = {"quantile": quantile, "batch_size": batch_size, "skip_bad": skip_bad, "heatmap": heatmap}
            # the listing travels once; share 1 also writes the duplicate paths, first in skipped.csv as in one process
            listings = [ray.put(found), ray.put(Listing(found.items, []))]
            score = ray.remote(score_share).options(**self.resources.options())
            pieces = {
                score.remote(str(self.model_dir), listings[k > 0], share, str(parts / f"{k:05d}"), summary,
                             options, max(1, int(self.resources.cpus))): _name(k, shares, found)
                for k, share in enumerate(shares)
            }
            results = {}
            with progress_bar(quiet, True) as bar:
                task = bar.add_task(f"scoring images ({len(shares)} Ray tasks)", total=len(found.items), status="")
                for ref, share_summary in results_as_done(ray, pieces):
                    results[ref] = share_summary
                    bar.update(task, advance=len(shares[list(pieces).index(ref)]))
        _merge_parts([results[ref] for ref in pieces], [parts / f"{k:05d}" for k in range(len(shares))], stage,
                     summary, n_duplicates=len(found.duplicates), n_items=len(found.items))
        shutil.rmtree(parts, ignore_errors=True)


def split_shares(n_items: int, batch_size: int, n_tasks: int) -> list[range]:
    """Contiguous shares of `n_items` positions, each a whole number of batches (but the last), as
    even as batches allow, at most `n_tasks` of them and none empty."""
    n_batches = math.ceil(n_items / batch_size)
    n = max(1, min(n_tasks, n_batches))
    bounds = [min(n_items, (k * n_batches // n) * batch_size) for k in range(n + 1)]
    return [range(a, b) for a, b in zip(bounds, bounds[1:])]


def first_batch_range(detector, found: Listing, display_side: int | None, batch_size: int,
                      quantile: float) -> tuple[float, float] | None:
    """The display range one process draws with for a bare model: that of the maps of the first batch
    holding a readable image (None when the detector gives no maps or nothing can be read)."""
    files = DecodedFiles(found.items, detector.spec_, display_side)
    for batch in stream_batches((files[i] for i in range(len(files))), batch_size):
        good = [d.model_input for d in batch if d.model_input is not None]
        if good:
            maps = detector.score(torch.from_numpy(np.stack(good))).maps
            return None if maps is None else _range(maps, quantile)
    return None


def score_share(model_dir: str, found: Listing, share: range, part: str, summary: PredictSummary, options: dict,
                threads: int) -> PredictSummary:
    """One Ray task: load the model once, stream `share` of the listing into the folder `part`."""
    torch.set_num_threads(threads)  # the cores Ray gave this task, not every core of the node
    detector = predict_module.load_detector(Path(model_dir))  # the loader predict itself uses
    Path(part).mkdir(parents=True, exist_ok=True)
    summary = replace(summary)
    _score_stream(detector, found, Path(part), summary, workers=0, quiet=True, indices=share, **options)
    return summary


def _name(k: int, shares: list[range], found: Listing) -> str:
    share = shares[k]
    return (f"Ray share {k + 1} of {len(shares)} (images {share.start + 1}-{share.stop} of {len(found.items)}, "
            f"from {found.items[share.start].path})")


def _merge_parts(results: list[PredictSummary], parts: list[Path], stage: Path, summary: PredictSummary, *,
                 n_duplicates: int, n_items: int) -> None:
    """The parts' rows and overlays, in listing order, into `stage`; their counts into `summary`."""
    for result in results:
        summary.n_scored += result.n_scored
        summary.n_skipped += result.n_skipped
        if result.n_predicted_anomalous is not None:
            summary.n_predicted_anomalous = (summary.n_predicted_anomalous or 0) + result.n_predicted_anomalous
        summary.overlays = summary.overlays or result.overlays
    _concatenate([p / SKIPPED_FILE for p in parts], stage / SKIPPED_FILE)
    if summary.n_scored == 0:
        with (stage / SKIPPED_FILE).open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))[1 + n_duplicates:]  # share 1 wrote the duplicate paths first
        raise nothing_readable(n_items, [f"{path}: {reason}" for path, reason in rows[:MAX_LISTED]])
    _concatenate([p / SCORES_FILE for p in parts], stage / SCORES_FILE)
    for part in parts:
        if (part / OVERLAY_DIR).is_dir():
            (stage / OVERLAY_DIR).mkdir(exist_ok=True)
            for entry in os.scandir(part / OVERLAY_DIR):
                os.replace(entry.path, stage / OVERLAY_DIR / entry.name)


def _concatenate(sources: list[Path], target: Path) -> None:
    """The CSVs of `sources` that exist into `target` byte for byte, the header once (nothing written
    when none exists)."""
    texts = [source.read_bytes() for source in sources if source.is_file()]
    if texts:
        header_end = texts[0].index(b"\n") + 1  # a header holds no line break (rows may, quoted)
        target.write_bytes(texts[0][:header_end] + b"".join(text[header_end:] for text in texts))
