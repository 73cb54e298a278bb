"""`predict`: score a folder (or manifest) of images with a saved model: scores.csv plus heatmap overlays.

Memory does not grow with the number of images: files are decoded one at a time (a DataLoader over
`DecodedFiles`), scored batch by batch, and each batch's rows and overlays are written before the
next is read. Nothing keeps all images or all maps.

Display range of the overlays. One range for every overlay keeps heatmaps comparable across images,
but a stream cannot look at all maps before drawing the first. The range is therefore fixed before
the stream starts, by the first rule that applies:

1. the model sits in a run folder (``<run>/model``): the minimum and maximum of the run's
   validation maps, recorded by `fit` / `evaluate` in metrics.json ("display_range"), give
   ``[min, q * max]`` (the same rule `display_range` applies to a whole set; q = --display-quantile,
   by default the run's own). Overlays of two predict calls with one model are then comparable;
2. a bare model folder (or an older run without that record): ``display_range`` over the maps of the
   first batch, stated in the console and in predict.json.

Output folder: scores.csv (one row per scored image), skipped.csv (path, reason: unreadable files
under --skip-bad, and paths that name a file already scored), overlays/, predict.json (counts,
threshold and display range used). Everything is written into a hidden folder inside --out and moved
into place at the end, so an interrupted or failed predict leaves the earlier outputs, never a mix.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from defectmine.data._messages import MAX_LISTED, listing
from defectmine.errors import ConfigError, DataError
from defectmine.pipeline.predict_writer import OVERLAY_DIR, SKIPPED_FILE, PredictWriter
from defectmine.pipeline.predict_inputs import DecodedFiles, Listing, as_is, list_inputs
from defectmine.pipeline.run_folder import METRICS_FILE, MODEL_DIR, RUN_CONFIG, SCORES_FILE, WEIGHTS_FILE, file_sha256

SUMMARY_FILE = "predict.json"
OUTPUTS = (SCORES_FILE, SKIPPED_FILE, SUMMARY_FILE, OVERLAY_DIR)
STAGE_PREFIX = ".predict-partial-"
#: Longest side of an overlay in pixels, unless asked otherwise.
OVERLAY_SIDE = 2048
#: Decoded pixels held at once: a batch closes early when its images reach this many bytes, so that a
#: folder of large images does not multiply the batch size by their overlay copies.
BATCH_BYTES = 256 * 2**20


@dataclass
class PredictSummary:
    """What one predict call did (also written to predict.json)."""

    out_dir: Path
    scores_csv: Path
    n_listed: int
    n_scored: int = 0
    n_skipped: int = 0  # unreadable files (only with skip_bad)
    n_duplicates: int = 0  # paths naming a file already scored
    n_predicted_anomalous: int | None = None
    threshold: float | None = None
    threshold_source: str = "none"  # "--threshold", "run" or "none"
    display_range: tuple[float, float] | None = None
    display_source: str = ""  # "run validation maps" or "first batch"
    overlays: Path | None = None
    overlay_max_side: int | None = None
    seconds: float = 0.0

    @property
    def skipped_csv(self) -> Path | None:
        return self.out_dir / SKIPPED_FILE if self.n_skipped or self.n_duplicates else None


def load_detector(model_dir: Path):
    """A saved detector; torch is imported here, not with the module (an exported model needs none)."""
    from defectmine.models.registry import load_detector as load

    return load(model_dir)


def predict_folder(model_dir, data: str, out_dir: Path, *, threshold: float | None = None,
                   display_quantile: float | None = None, overlays: bool = True,
                   overlay_size: int = OVERLAY_SIDE, batch_size: int | None = None, workers: int = 0,
                   skip_bad: bool = False, overwrite: bool = False, quiet: bool = False,
                   heatmap: str = "native", score_stream=None) -> PredictSummary:
    """Score every image of a folder (any layout), CSV manifest or single image with a saved model.

    model_dir: a saved model folder (a run's model/), or an exported model already loaded
        (`defectmine.export.load_exported`: threshold and display range come from its file).

    Writes scores.csv (path, label, defect_class, score, predicted when a threshold is known, overlay),
    heatmap overlays no larger than `overlay_size` pixels on their longest side, skipped.csv and
    predict.json into `out_dir` (see the module docstring for the display range and the listing rules).

    threshold: decision threshold; default the run's when the model sits in a run folder.
    display_quantile: q of the display range [min, q * max]; default the run's (0.25 without a run).
    batch_size: images scored at once (default the model's score_batch_size).
    workers: DataLoader processes that decode files (0: decode in this process).
    skip_bad: list unreadable files in skipped.csv and go on; otherwise stop at the first batch
        holding one, with one error naming them, and write nothing.
    overwrite: replace the outputs of an earlier predict in `out_dir` (a non-empty `out_dir` is
        refused without it); other files there are left alone.
    heatmap: "native" (the detector's own maps) or "gradcam" (Grad-CAM of the image score, each map
        scaled to [0, 1], so the display range is [0, 1]).
    score_stream: the step that scores the listing into the staging folder, called like
        `_score_stream`; default: this process. `defectmine.distributed` passes one that spreads the
        listing over Ray tasks; everything around it (options, listing, display range, outputs) stays here.
    """
    started = time.perf_counter()
    loaded = getattr(model_dir, "takes_numpy", False)
    out_dir = Path(out_dir)
    _check_options(overlay_size, batch_size, workers, display_quantile)
    _check_heatmap(heatmap, loaded)
    _check_out_folder(out_dir, overwrite)
    if loaded:
        detector, run = model_dir, model_dir.run_context()
        model_dir = detector.path
    else:
        model_dir = Path(model_dir)
        detector = load_detector(model_dir)
        run = run_context(model_dir)
    if threshold is not None:
        threshold, threshold_source = float(threshold), "--threshold"
    elif run.get("threshold") is not None:
        threshold, threshold_source = float(run["threshold"]), run.get("threshold_source", "run")
    else:
        threshold_source = "none"
    quantile = display_quantile if display_quantile is not None else run.get("display_quantile", 0.25)
    found = list_inputs(data, exclude=out_dir / OVERLAY_DIR)
    summary = PredictSummary(out_dir=out_dir, scores_csv=out_dir / SCORES_FILE, n_listed=len(found.items),
                             n_duplicates=len(found.duplicates), threshold=threshold,
                             threshold_source=threshold_source, overlay_max_side=overlay_size if overlays else None)
    if heatmap == "gradcam":
        summary.display_range, summary.display_source = (0.0, 1.0), "Grad-CAM maps, each in [0, 1]"
    elif run.get("map_range") is not None:
        summary.display_range = _range(np.asarray(run["map_range"], dtype=np.float64), quantile)
        summary.display_source = "run validation maps"
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = out_dir / f"{STAGE_PREFIX}{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        (score_stream or _score_stream)(detector, found, stage, summary, quantile=quantile, heatmap=heatmap,
                                        batch_size=batch_size or getattr(detector.config, "score_batch_size", 32),
                                        workers=workers, skip_bad=skip_bad, quiet=quiet)
        summary.seconds = time.perf_counter() - started
        _write_summary(stage / SUMMARY_FILE, summary, model_dir, data, quantile)
    except BaseException:  # also Ctrl-C: never leave half a prediction behind
        shutil.rmtree(stage, ignore_errors=True)
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise
    _move_into_place(stage, out_dir)
    return summary


def _check_heatmap(heatmap: str, exported: bool) -> None:
    if exported and heatmap != "native":  # Grad-CAM needs gradients: it stays in torch
        raise ConfigError(f"--heatmap {heatmap}: an exported model holds its native maps only (Grad-CAM needs "
                          "gradients). Fix: use --heatmap native, or predict with the model folder.")
    if not exported:
        from defectmine.models.trained import HEATMAPS

        if heatmap not in HEATMAPS:
            raise ConfigError(f"--heatmap {heatmap!r} is unknown. Fix: use one of {', '.join(HEATMAPS)}.")


def _check_options(overlay_size: int, batch_size: int | None, workers: int, quantile: float | None) -> None:
    if int(overlay_size) < 1:
        raise ConfigError(f"--overlay-size {overlay_size}: must be at least 1 pixel, e.g. 2048.")
    if batch_size is not None and int(batch_size) < 1:
        raise ConfigError(f"--batch-size {batch_size}: must be at least 1, e.g. 32.")
    if int(workers) < 0:
        raise ConfigError(f"--workers {workers}: must be 0 (decode in this process) or more.")
    if quantile is not None and not 0 < quantile <= 1:
        raise ConfigError(f"--display-quantile {quantile}: must be in (0, 1], e.g. 0.25.")


def _check_out_folder(out_dir: Path, overwrite: bool) -> None:
    """Refuse a file, or a non-empty folder unless `overwrite`: overlays of an earlier predict would
    otherwise sit beside the new ones and look like part of them."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir}: --out is a file, not a folder. Fix: choose a folder name.")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise ConfigError(
            f"{out_dir}: the output folder is not empty. Fix: choose a new --out, or pass --overwrite to replace "
            f"the outputs of an earlier predict there ({', '.join(OUTPUTS)}; they are kept until the new ones "
            "are complete)."
        )


def run_context(model_dir: Path) -> dict:
    """What the run holding `model_dir` says about predicting: threshold, display quantile and the
    range of its validation maps. {} for a bare model folder; an error when the model in the folder is
    not the one the run fitted (its threshold and range would belong to another model)."""
    run_dir = model_dir.parent
    if model_dir.name != MODEL_DIR or not (run_dir / METRICS_FILE).is_file():
        return {}
    document = _read_json(run_dir / RUN_CONFIG) if (run_dir / RUN_CONFIG).is_file() else {}
    recorded = document.get("integrity", {}).get("weights_sha256")
    if recorded and file_sha256(model_dir / WEIGHTS_FILE) != recorded:
        raise DataError(
            f"{model_dir}: these weights are not the ones the run in {run_dir} fitted, so its threshold and "
            f"display range ({METRICS_FILE}) do not belong to them. Fix: restore the run's own model/, or copy "
            "the model folder out of the run and pass --threshold."
        )
    metrics = _read_json(run_dir / METRICS_FILE)
    context = {"threshold": (metrics.get("threshold") or {}).get("value")}
    stats = metrics.get("display_range") or {}
    if stats.get("map_min") is not None and stats.get("map_max") is not None:
        context["map_range"] = (stats["map_min"], stats["map_max"])
    if isinstance(document.get("run", {}).get("display_quantile"), (int, float)):
        context["display_quantile"] = float(document["run"]["display_quantile"])
    return context


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read it ({err}). Fix: restore the run folder, or fit again.") from None
    return value if isinstance(value, dict) else {}


def _range(maps, quantile: float) -> tuple[float, float]:
    from defectmine.explain import display_range

    return display_range(maps, quantile)


def stream_batches(loader, max_images: int, max_bytes: int = BATCH_BYTES):
    """Lists of Decoded items: `max_images` of them, or fewer once they hold `max_bytes`."""
    batch, held = [], 0
    for item in loader:
        batch.append(item)
        held += item.nbytes
        if len(batch) >= max_images or held >= max_bytes:
            yield batch
            batch, held = [], 0
    if batch:
        yield batch


def _score_stream(detector, found: Listing, stage: Path, summary: PredictSummary, *, quantile: float,
                  batch_size: int, workers: int, skip_bad: bool, quiet: bool, heatmap: str = "native",
                  indices: range | None = None) -> None:
    """Decode, score and write batch by batch into `stage`; updates `summary`.

    indices: score only these positions of `found.items` (one share of a distributed predict: row
    order and overlay names stay those of the whole listing; a share may hold no readable image, the
    caller checks the whole)."""
    from defectmine.progress import progress_bar

    items = found.items
    share = range(len(items)) if indices is None else indices
    files = DecodedFiles(items, detector.spec_, summary.overlay_max_side)
    loader = _loader(files, workers, share)
    with PredictWriter(stage, summary.threshold, len(items)) as writer, progress_bar(quiet, True) as bar:
        for path, first in found.duplicates:
            writer.skip(path, f"same file as {first} (a symlink or second path to it); scored once, there")
        task = bar.add_task("scoring images", total=len(share), status="")
        done = 0
        for batch in stream_batches(loader, batch_size):
            bad = [d for d in batch if d.model_input is None]
            if bad and not skip_bad:
                lines = [f"{items[d.index].path}: {d.reason}" for d in bad]
                raise DataError(
                    f"{len(bad)} image(s) could not be read:\n{listing(lines)}\nStopped at the first unreadable "
                    f"file(s) ({done + len(batch)} of {len(share)} images read); nothing was written. Fix: replace "
                    f"or remove these files, or pass --skip-bad to score the others and list every unreadable file "
                    f"in {SKIPPED_FILE}."
                )
            for d in bad:
                writer.skip(items[d.index].path, d.reason)
                summary.n_skipped += 1
                if len(writer.unreadable) < MAX_LISTED:
                    writer.unreadable.append(f"{items[d.index].path}: {d.reason}")
            good = [d for d in batch if d.model_input is not None]
            if good:
                _score_batch(detector, good, items, writer, summary, quantile, heatmap)
            writer.flush()
            done += len(batch)
            bar.update(task, advance=len(batch), status=f"{summary.n_skipped} unreadable" if summary.n_skipped else "")
    if summary.n_scored == 0 and indices is None:
        raise nothing_readable(len(items), writer.unreadable)
    summary.overlays = summary.out_dir / OVERLAY_DIR if writer.wrote_overlays else None


def nothing_readable(n_items: int, examples: list[str]) -> DataError:
    """The error when not one of `n_items` listed images could be read (`examples`: "path: reason")."""
    return DataError(f"none of the {n_items} image(s) could be read, e.g.:\n{listing(examples)}\n"
                     "Fix: check that the paths point at image files (PNG, JPEG, BMP, TIFF).")


def _loader(files: DecodedFiles, workers: int, share: range):
    """The decoded files of `share` in order: in this process (no torch needed), or over DataLoader workers."""
    if workers == 0:
        return (files[i] for i in share)
    try:
        from torch.utils.data import DataLoader
    except ImportError:
        raise ConfigError(f"--workers {workers}: decoding workers need torch, which is not installed here. "
                          "Fix: pass --workers 0.") from None
    return DataLoader(files, batch_size=None, sampler=share, num_workers=workers, collate_fn=as_is)


def _score_batch(detector, good: list, items: list, writer: "PredictWriter", summary: PredictSummary,
                 quantile: float, heatmap: str = "native") -> None:
    from defectmine.explain import overlay

    pixels = np.stack([d.model_input for d in good])
    if not getattr(detector, "takes_numpy", False):
        import torch

        pixels = torch.from_numpy(pixels)
    scores = detector.score(pixels, **({} if heatmap == "native" else {"heatmap": heatmap}))
    maps = scores.maps
    if maps is not None and summary.display_range is None:
        summary.display_range, summary.display_source = _range(maps, quantile), "first batch"
    for d, score, k in zip(good, scores.image, range(len(good))):
        item = items[d.index]
        heat = None
        if maps is not None and d.display is not None:
            heat = overlay(d.display, maps[k], *summary.display_range, content=d.content)
        writer.row(item, d.index, float(score), heat)
        summary.n_scored += 1
        if summary.threshold is not None:
            summary.n_predicted_anomalous = (summary.n_predicted_anomalous or 0) + int(score >= summary.threshold)


def _write_summary(path: Path, summary: PredictSummary, model_dir: Path, data: str, quantile: float) -> None:
    from defectmine.report.files import write_json

    document = {k: v for k, v in asdict(summary).items() if k not in ("out_dir", "scores_csv")}
    document.update(model=os.path.abspath(model_dir), data=str(data), display_quantile=quantile,
                    images_per_second=summary.n_scored / summary.seconds if summary.seconds else None)
    write_json(path, document)


def _move_into_place(stage: Path, out_dir: Path) -> None:
    """Replace the outputs of an earlier predict (and any stage a killed predict left) by the new ones."""
    for name in OUTPUTS:
        old = out_dir / name
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        elif old.exists() or old.is_symlink():
            old.unlink()
    for leftover in out_dir.glob(f"{STAGE_PREFIX}*"):
        if leftover != stage:
            shutil.rmtree(leftover, ignore_errors=True)
    for name in OUTPUTS:
        if (stage / name).exists():
            os.replace(stage / name, out_dir / name)
    shutil.rmtree(stage, ignore_errors=True)
