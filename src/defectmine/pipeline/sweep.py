"""Running a damage-mining sweep: one split, every (point, seed) fitted and evaluated along the shared
fit -> score -> evaluate path, rows kept after every fit (resumable), then summarised and drawn.

The rule that reads the curve (`mining_phases`) and the summary live in `defectmine.evaluation.sweep`;
the table, curve and page in `defectmine.report.sweep`. This module only orchestrates.

    result = run_sweep(RunConfig(data="elpv", detector="fcdd"), ks=[1, 2, 5, 10, 20, 40, 80],
                       seeds=[0, 1, 2], out_dir=Path("runs/sweep"))
    print(result.recommendation)
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

from defectmine.data import ImageDataset
from defectmine.data.splits import POSITIVE_RATIOS, positive_ratio_subset
from defectmine.errors import ConfigError, DataError
from defectmine.evaluation.sweep import (
    _INT_FIELDS,
    _TEXT_FIELDS,
    K,
    METRICS,
    ROWS_FILE,
    SweepPoint,
    SweepResult,
    _check_seeds,
    phases_of,
    summarise,
    sweep_points,
)
from defectmine.pipeline.data import (
    PreparedData,
    build_datasets,
    load_records,
    split_records,
    training_anomalies,
)
from defectmine.pipeline.runinfo import environment
from defectmine.pipeline.steps import fit_and_evaluate
from defectmine.progress import progress_bar
from defectmine.report.files import write_scores_csv
from defectmine.report.sweep import write_sweep_files


def _sweep_split(records, base, points: list[SweepPoint]):
    """One split for the whole sweep, so that every point is evaluated on the same val and test images,
    and the largest K the data allows.

    Data with a committed split uses it (K up to its reserved anomalies). Otherwise a K sweep reserves
    max(K) anomalies for training (the split `fit --k max(K)` makes; K up to all anomalies but one each
    for val and test) and a ratio sweep uses the split `fit --ratio` makes.
    """
    ks = [p.k for p in points if p.k is not None]
    if records and all(r.split for r in records):
        split = split_records(records, base)
        return split, len(split.train_anomalous)
    n_anomalous = sum(r.is_anomalous for r in records)
    spare = max(0, n_anomalous - 2)
    if ks and max(ks) > spare:
        raise DataError(
            f"--ks: K={max(ks)} is more than the {spare} labelled anomalies {base.data} can spare for training "
            f"({n_anomalous} anomalous images; at least one each stays for val and test). Fix: use K <= {spare}."
        )
    return split_records(records, replace(base, k=max(ks) if ks else None, ratio=None)), spare


def _training_anomalies(split, base, points: list[SweepPoint], seeds: list[int], k_limit: int) -> dict:
    """The labelled anomalies of every (point, seed), or one DataError naming every point out of reach."""
    pool, data = len(split.train_anomalous), base.data
    chosen, unreachable, first_error = {}, [], None
    for point in points:
        for seed in seeds:
            try:
                chosen[point.label, seed] = training_anomalies(split, point.config(base, seed))
            except DataError as err:
                first_error = first_error or str(err)
                unreachable.append(point.label)
                break
    if not unreachable:
        return chosen
    if points[0].protocol == K:
        largest = max(p.k for p in points)
        raise DataError(
            f"--ks: K={largest} is more than the {pool} labelled anomalies in the training pool of {data}. "
            f"Fix: use K <= {pool} (e.g. --ks {','.join(str(k) for k in _log_spaced(pool))})."
        )
    normal = split.normal_train
    reachable = []
    for ratio in POSITIVE_RATIOS:
        try:
            positive_ratio_subset(normal, split.train_anomalous, ratio)
            reachable.append(ratio)
        except DataError:
            pass
    raise DataError(
        f"--ratios: {', '.join(unreachable)} cannot be reached on {data}: {first_error} "
        f"Reachable ratios here: {', '.join(reachable) or 'none'}; or sweep numbers of anomalies with --ks "
        f"(up to {k_limit})."
    )


def _log_spaced(top: int) -> list[int]:
    """1, 2, 5, 10, 20, 50, ... up to `top`, and `top` itself."""
    values, decade = [], 1
    while decade <= top:
        values += [v * decade for v in (1, 2, 5) if v * decade <= top]
        decade *= 10
    return sorted(set(values + [top])) if top > 0 else [0]


def _config_id(base) -> str:
    """A short fingerprint of what makes rows comparable (everything but the point, seed and quiet)."""
    settings = {k: v for k, v in asdict(base).items() if k not in ("k", "ratio", "seed", "quiet")}
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _read_rows(path: Path) -> list[dict]:
    def cast(key: str, value: str):
        if value == "" or key in _TEXT_FIELDS:
            return None if value == "" else value
        return int(float(value)) if key in _INT_FIELDS else float(value)

    with path.open(newline="", encoding="utf-8") as f:
        return [{k: cast(k, v) for k, v in row.items()} for row in csv.DictReader(f)]


def _resumed_rows(path: Path, config_id: str, wanted: set[tuple[str, int]]) -> list[dict]:
    if not path.is_file():
        return []
    try:
        rows = _read_rows(path)
    except (ValueError, csv.Error) as err:
        raise DataError(f"{path}: cannot resume from it ({err}). Fix: delete it or choose another --out.") from None
    other = [r for r in rows if r.get("config_id") != config_id]
    if other:
        raise ConfigError(
            f"{path} holds rows of a sweep with other settings (data, detector, options); resuming would mix "
            "them. Fix: choose another --out, or drop --resume to start this sweep afresh."
        )
    return [r for r in rows if (r["point"], r["seed"]) in wanted]


def merge_sweep_rows(parts: Sequence[Path | str], out_dir: Path | str) -> int:
    """Gather the fitted rows of one sweep that ran in pieces (e.g. one folder per seed, side by side)
    into `out_dir/sweep_rows.csv`, so that `run_sweep(..., resume=True)` on `out_dir` summarises them
    without fitting again. Rows already in `out_dir` (an earlier merge) are kept, but a (point, seed)
    found twice keeps the piece's row: the pieces are the newer. Returns the number of rows written.

    Raises:
        ConfigError: if the rows come from sweeps with different settings (their config ids differ);
            the message lists which file holds which settings.
        DataError: if a piece's sweep_rows.csv cannot be read.
    """
    out_dir = Path(out_dir)
    sources = [*(Path(part) / ROWS_FILE for part in parts), out_dir / ROWS_FILE]
    rows, seen, files_by_config = [], set(), {}
    for source in sources:
        if not source.is_file():
            continue
        try:
            found = _read_rows(source)
        except (ValueError, csv.Error) as err:
            raise DataError(f"{source}: cannot read its rows ({err}). Fix: delete it and run that piece again.") from None
        for row in found:
            files_by_config.setdefault(row.get("config_id"), []).append(str(source))
            if (row["point"], row["seed"]) not in seen:
                seen.add((row["point"], row["seed"]))
                rows.append(row)
    if len(files_by_config) > 1:
        listing = "; ".join(f"settings {config}: {', '.join(dict.fromkeys(files))}"
                            for config, files in files_by_config.items())
        raise ConfigError(f"rows of sweeps with other settings would mix ({listing}). Fix: delete the rows of "
                          "the run you do not want (e.g. an old smoke run's), or run every piece with the same options.")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_scores_csv(out_dir / ROWS_FILE, rows)
    return len(rows)


def run_sweep(
    base,
    *,
    ratios: list[str] | None = None,
    ks: list[int] | None = None,
    seeds: list[int],
    out_dir: Path,
    tolerance: float = 0.01,
    resume: bool = False,
    quiet: bool = False,
    fits=None,
) -> SweepResult:
    """Fit and evaluate the configured detector at every point of a mining sweep, for every seed.

    Args:
        base: the `RunConfig` of every run (data, detector, parameters, image size, threshold rule);
            its own `k` and `ratio` are replaced by each point's.
        ratios: deeper-FCDD positive ratios ("1/1" ... "1/128", "unsupervised" = one anomaly): all
            normal training images plus round(N·ratio) anomalies sampled (per seed) from the training pool.
        ks: instead of ratios, numbers of labelled anomalies (the first K of the pool; 0 = none).
        seeds: training seeds; each point is fitted once per seed.
        out_dir: where to write sweep_rows.csv (after every fit, so an interrupted sweep keeps its
            work), sweep.csv (summary), sweep.json, sweep.png and report.html.
        tolerance: AUROC gain per doubling below which collecting more anomalies is over-mining.
        resume: keep the rows of `out_dir/sweep_rows.csv` made with the same settings and fit only the
            missing (point, seed) pairs.
        quiet: no progress bars.
        fits: what runs the fits: `fits(fit_one, jobs)` yields `(job, fit_one(job))` for every
            (point, seed) job as its fit ends, in any order; default: one after another in this
            process. `defectmine.distributed` passes one that runs them as Ray tasks (rows are the same:
            each fit depends on its point and seed only, and rows are sorted at the end).

    Every point is fitted and evaluated along `pipeline.steps.fit_and_evaluate`, as `fit_run` does
    (threshold from val, metrics on test, one split for all points) but writes no model: images are
    decoded once per sweep and each point takes a subset of the anomaly pool. The recommendation reads
    the validation AUROC curve; test AUROC is shown beside it.
    """
    quiet = quiet or base.quiet
    points = sweep_points(ratios=ratios, ks=ks)
    seeds = _check_seeds(seeds)
    if tolerance is None or not math.isfinite(float(tolerance)) or tolerance < 0:
        raise ConfigError(f"--tolerance {tolerance!r}: must be a number >= 0 (AUROC per doubling, e.g. 0.01).")
    base = replace(base, k=None, ratio=None)
    out_dir = Path(out_dir)
    started = time.perf_counter()

    split, k_limit = _sweep_split(load_records(base.data), base, points)
    chosen = _training_anomalies(split, base, points, seeds, k_limit)
    config_id = _config_id(base)
    rows_path = out_dir / ROWS_FILE
    wanted = {(p.label, s) for p in points for s in seeds}
    rows = _resumed_rows(rows_path, config_id, wanted) if resume else []
    done = {(r["point"], r["seed"]) for r in rows}

    # Decode once: normals, the whole anomaly pool, val and test; points take subsets of the pool.
    data = build_datasets(split, list(split.train_anomalous), replace(base, quiet=quiet))
    pool: ImageDataset | None = data.anomalous
    pool_index = {str(r.path): i for i, r in enumerate(pool.records)} if pool is not None else {}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_scores_csv(rows_path, rows)

    todo = [(p, s) for p in points for s in seeds if (p.label, s) not in done]
    # skip_bad may have dropped pool images: those are missing from fit_run's dataset too
    pool_rows = {(p.label, s): [pool_index[str(r.path)] for r in chosen[p.label, s] if str(r.path) in pool_index]
                 for p, s in todo}
    fit_one = partial(_fit_point, base=base, data=data, pool_rows=pool_rows, config_id=config_id)
    with progress_bar(quiet=quiet) as bar:
        task = bar.add_task("mining sweep", total=len(wanted), completed=len(done), status="")

        def one_by_one(fit_one, jobs):
            for point, seed in jobs:
                bar.update(task, status=f"{point.label} seed {seed}: fitting")
                yield (point, seed), fit_one((point, seed))

        for (point, seed), row in (fits or one_by_one)(fit_one, todo):
            rows.append(row)
            write_scores_csv(rows_path, rows)
            auroc = row["auroc"]
            bar.update(task, advance=1, status=f"{point.label} seed {seed}: AUROC "
                       + ("n/a" if auroc is None else f"{auroc:.3f}"))

    order = {(p.label, s): i for i, (p, s) in enumerate((p, s) for p in points for s in seeds)}
    rows.sort(key=lambda r: order[r["point"], r["seed"]])
    write_scores_csv(rows_path, rows)
    summary = summarise(rows)
    phases, recommendation = phases_of(summary, tolerance)
    result = SweepResult(out_dir=out_dir, protocol=points[0].protocol, rows=rows, summary=summary, phases=phases,
                         recommendation=recommendation, files={})
    result.files = write_sweep_files(result, base, seeds=seeds, seconds=time.perf_counter() - started,
                                    environment=environment())
    return result


def _fit_point(job: tuple[SweepPoint, int], *, base, data: PreparedData, pool_rows: dict, config_id: str) -> dict:
    """Fit and evaluate one (point, seed) on the sweep's decoded data (`data.anomalous`: the whole pool,
    of which the point takes `pool_rows`); its sweep row."""
    point, seed = job
    rows_in_pool = pool_rows[point.label, seed]
    anomalous = data.anomalous.subset(rows_in_pool) if rows_in_pool else None
    prepared = replace(data, anomalous=anomalous)
    return _row(point, seed, config_id, prepared, fit_and_evaluate(point.config(base, seed), prepared))


def _row(point: SweepPoint, seed: int, config_id: str, data, outcome) -> dict:
    metrics, detector = outcome.metrics, outcome.detector
    test = metrics.get("test") or {}
    pixel = metrics.get("test_pixel") or {}
    row = {
        "point": point.label, "protocol": point.protocol, "ratio": point.ratio, "k": point.k, "seed": seed,
        "n_anomalous": 0 if data.anomalous is None else len(data.anomalous), "n_normal": len(data.normal),
    }
    row.update({m: test.get(m) for m in METRICS})
    row.update({
        "val_auroc": metrics["val"].get("auroc"), "threshold": metrics["threshold"]["value"],
        "pixel_auroc": pixel.get("pixel_auroc"), "aupro": pixel.get("aupro"),
        "fit_seconds": outcome.fit_seconds, "score_ms_per_image": outcome.score_ms,
        "best_epoch": getattr(detector, "best_epoch_", None), "config_id": config_id,
    })
    return row
