"""Damage-mining sweeps: how detection improves as labelled anomalies are added.

The deeper-FCDD study (Yasuno et al., sections 3-4, Table 2) trains one detector per positive ratio
1/1, 1/2, ..., 1/128 and "unsupervised" (one anomaly) against a fixed set of normals, and reads two
phases off the accuracy curve: a *damage vision mining opportunity* phase, where more labelled defects
still raise the AUROC, and an *over-mining* phase, where they no longer do. This module runs that sweep
(over positive ratios or over K labelled anomalies, several seeds each), summarises it as mean ± std per
point and turns it into a recommendation: keep collecting defect images, or stop. Its table, mining
curve and HTML page are drawn by `defectmine.report.sweep`.

It sits on top of `defectmine.workflow`: every point is fitted and evaluated exactly as `fit_run` does
(threshold from val, metrics on test), and it never reaches inside a detector.

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
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from defectmine.errors import ConfigError, DataError
from defectmine.evaluation.aggregate import aggregate, format_mean_std

ROWS_FILE = "sweep_rows.csv"
SUMMARY_FILE = "sweep.csv"
JSON_FILE = "sweep.json"
PLOT_FILE = "sweep.png"
REPORT_FILE = "report.html"

RATIO, K = "ratio", "k"
OPPORTUNITY, OVER_MINING, UNDETERMINED = "mining opportunity", "over-mining", "undetermined"
BASELINE = "baseline (no labelled anomalies)"
METRICS = ("auroc", "auprc", "f1", "precision", "recall")
_AGGREGATED = ("n_anomalous", "n_normal", *METRICS, "val_auroc", "pixel_auroc", "aupro", "fit_seconds")
_TEXT_FIELDS = ("point", "protocol", "ratio", "config_id")
_INT_FIELDS = ("k", "seed", "n_anomalous", "n_normal", "best_epoch")
METRIC_LABELS = {"auroc": "AUROC", "auprc": "AUPRC", "f1": "F1", "precision": "precision", "recall": "recall"}
# Gains are differences of means; without this slack a gain of exactly the tolerance could fall below it.
_EPS = 1e-12


# -- the mining-phase rule ------------------------------------------------------------------------
def _anomalies(n: int) -> str:
    return f"{n} anomaly" if n == 1 else f"{n} anomalies"


def mining_phases(
    n_anomalies: Sequence[int], auroc_means: Sequence[float], tolerance: float = 0.01, *, metric: str = "AUROC"
) -> dict:
    """Split a mining curve into its "mining opportunity" and "over-mining" phases.

    The rule:

    1. Sort the points by number of labelled anomalies; points with the same number are merged (their
       means averaged: they are the same experiment up to the sample).
    2. Take the running maximum of the curve (the *envelope*). A dip followed by a recovery is seed
       noise, not a gain, so only AUROC above the best so far counts. This is the choice for noisy,
       non-monotone curves; the raw gains are returned too.
    3. Gain per doubling between successive points i, i+1:
       ``(envelope[i+1] - envelope[i]) / log2(n[i+1] / n[i])``.
    4. Over-mining starts at the first point b after which every further gain per doubling is below
       `tolerance` (b is never the last point: at least one gain must be measured past it). Points
       before b are "mining opportunity", b and later "over-mining". When the last gain still reaches
       the tolerance there is no over-mining yet (boundary None): every point is "mining opportunity".
       A flat curve is over-mining from its first point. A slow start (a small gain followed by a
       large one) stays in the opportunity phase: the later gain shows that collecting paid off.
    5. With a single point no gain can be measured: its phase is "undetermined".

    Args:
        n_anomalies: number of labelled anomalies per point (positive integers).
        auroc_means: the metric (AUROC) per point, mean over seeds, same order.
        tolerance: smallest gain per doubling of anomalies worth collecting for (0.01 AUROC).
        metric: name used in the recommendation.

    Returns:
        {"metric", "tolerance", "n_anomalies" (sorted, distinct), "means", "envelope",
        "gain_per_doubling" (envelope, one per interval), "raw_gain_per_doubling", "phases" (one per
        point), "boundary" (number of anomalies where over-mining starts, or None), "boundary_index",
        "state" (phase of the last point), "recommendation" (one line)}.

    Raises:
        ConfigError: empty or mismatched inputs, non-positive counts, non-finite means or tolerance.
    """
    counts, means = list(n_anomalies), list(auroc_means)
    if not counts or len(counts) != len(means):
        raise ConfigError(
            f"mining_phases: got {len(counts)} anomaly counts and {len(means)} means; pass one mean per point "
            "(at least one point)."
        )
    if any(isinstance(n, bool) or not float(n).is_integer() or n <= 0 for n in counts):
        raise ConfigError(
            f"mining_phases: anomaly counts must be positive integers (the curve is read per doubling), got "
            f"{counts}. Leave the no-anomaly baseline (K=0) out of the rule."
        )
    if any(m is None or not math.isfinite(float(m)) for m in means):
        raise ConfigError(f"mining_phases: every mean must be a finite number, got {means}.")
    if tolerance is None or not math.isfinite(float(tolerance)) or tolerance < 0:
        raise ConfigError(f"mining_phases: tolerance={tolerance!r} must be a number >= 0 (e.g. 0.01 AUROC).")

    xs = sorted({int(n) for n in counts})
    ys = [float(np.mean([float(m) for c, m in zip(counts, means) if int(c) == x])) for x in xs]
    envelope = np.maximum.accumulate(ys).tolist()
    doublings = [math.log2(xs[i + 1] / xs[i]) for i in range(len(xs) - 1)]
    gains = [(envelope[i + 1] - envelope[i]) / d for i, d in enumerate(doublings)]
    raw_gains = [(ys[i + 1] - ys[i]) / d for i, d in enumerate(doublings)]

    boundary_index = next(
        (i for i in range(len(gains)) if all(g < tolerance - _EPS for g in gains[i:])), None
    )
    if len(xs) == 1:
        phases = [UNDETERMINED]
        recommendation = (
            f"Only one point ({_anomalies(xs[0])}): the gain per doubling cannot be measured; "
            f"add a point with about {2 * xs[0]} anomalies."
        )
    elif boundary_index is None:
        phases = [OPPORTUNITY] * len(xs)
        last = xs[-1]
        recommendation = (
            f"{metric} still gains {gains[-1]:.3f} per doubling at {_anomalies(last)}: collecting about "
            f"{last} more defect images is worth it (next point {2 * last})."
        )
    else:
        phases = [OPPORTUNITY if i < boundary_index else OVER_MINING for i in range(len(xs))]
        start = xs[boundary_index]
        recommendation = (
            f"Over-mining from {_anomalies(start)} on: gains below {tolerance:g} {metric} per doubling"
            + (f" up to {xs[-1]}" if boundary_index == 0 else "")
            + "; stop collecting."
        )
    return {
        "metric": metric,
        "tolerance": float(tolerance),
        "n_anomalies": xs,
        "means": ys,
        "envelope": envelope,
        "gain_per_doubling": gains,
        "raw_gain_per_doubling": raw_gains,
        "phases": phases,
        "boundary": None if boundary_index is None else xs[boundary_index],
        "boundary_index": boundary_index,
        "state": phases[-1],
        "recommendation": recommendation,
    }


def phase_spans(phases: dict) -> list[tuple[float, float, str]]:
    """(x0, x1, label) spans of the two phases in numbers of anomalies, for `curve_png(shade=...)`."""
    xs, b = phases["n_anomalies"], phases["boundary_index"]
    if len(xs) < 2:
        return []
    if b is None:
        return [(xs[0], xs[-1], OPPORTUNITY)]
    spans = [(xs[0], xs[b], OPPORTUNITY)] if b > 0 else []
    return spans + [(xs[b], xs[-1], OVER_MINING)]


# -- sweep points ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepPoint:
    """One point of a sweep: a positive ratio ("1/16", "unsupervised") or a number K of anomalies."""

    label: str
    ratio: str | None = None
    k: int | None = None

    @property
    def protocol(self) -> str:
        return RATIO if self.ratio is not None else K

    def config(self, base, seed: int):
        """The run configuration of this point and seed (silent: the sweep draws its own progress)."""
        return replace(base, ratio=self.ratio, k=self.k, seed=seed, quiet=True)


def sweep_points(*, ratios: Sequence[str] | None = None, ks: Sequence[int] | None = None) -> list[SweepPoint]:
    """Validated sweep points from either positive ratios or numbers K of labelled anomalies."""
    from defectmine.data.splits import UNSUPERVISED, parse_ratio

    if ratios is not None and ks is not None:
        raise ConfigError("--ratios and --ks given together: a sweep runs over positive ratios or over numbers "
                          "of labelled anomalies, not both. Fix: keep one of them.")
    if ratios is None and ks is None:
        raise ConfigError("no sweep points: give --ratios (deeper-FCDD protocol, e.g. 1/16,1/64,unsupervised) or "
                          "--ks (numbers of labelled anomalies, e.g. 1,2,5,10,20,40,80).")
    values = list(ratios if ratios is not None else ks)
    if not values:
        option = "--ratios" if ratios is not None else "--ks"
        raise ConfigError(f"{option}: no points given; pass a comma-separated list, e.g. {option} "
                          + ("1/16,1/64,unsupervised." if ratios is not None else "10,20,40."))
    points = []
    if ratios is not None:
        for value in values:
            text = str(value).strip()
            try:
                parse_ratio(text)
            except ConfigError as err:
                raise ConfigError(f"--ratios: {err}") from None
            label = UNSUPERVISED if text.lower() == UNSUPERVISED else text.replace(" ", "")
            points.append(SweepPoint(label=label, ratio=label))
    else:
        for value in values:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ConfigError(f"--ks: {value!r} is not a number of labelled anomalies. Fix: use integers >= 0, "
                                  "e.g. --ks 1,2,5,10,20,40,80.")
            points.append(SweepPoint(label=f"K={int(value)}", k=int(value)))
    labels = [p.label for p in points]
    repeated = sorted({x for x in labels if labels.count(x) > 1})
    if repeated:
        option = "--ratios" if ratios is not None else "--ks"
        raise ConfigError(f"{option}: {', '.join(repeated)} given more than once; list every point once.")
    return points


def _check_seeds(seeds: Sequence[int]) -> list[int]:
    seeds = list(seeds)
    if not seeds:
        raise ConfigError("--seeds: no seeds given; pass at least one, e.g. --seeds 0,1,2.")
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, (int, np.integer))]
    if bad:
        raise ConfigError(f"--seeds: {bad[0]!r} is not an integer seed; e.g. --seeds 0,1,2.")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: {seeds} repeats a seed; every seed would give the same run twice.")
    return [int(s) for s in seeds]


def _sweep_split(records, base, points: list[SweepPoint]):
    """One split for the whole sweep, so that every point is evaluated on the same val and test images,
    and the largest K the data allows.

    Data with a committed split uses it (K up to its reserved anomalies). Otherwise a K sweep reserves
    max(K) anomalies for training (the split `fit --k max(K)` makes; K up to all anomalies but one each
    for val and test) and a ratio sweep uses the split `fit --ratio` makes.
    """
    from defectmine.workflow import split_records

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
    from defectmine.data.splits import POSITIVE_RATIOS, positive_ratio_subset
    from defectmine.workflow import training_anomalies

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


# -- running --------------------------------------------------------------------------------------
@dataclass
class SweepResult:
    """What `run_sweep` found and wrote.

    rows: one dict per (point, seed); summary: one dict per point (mean ± std over seeds, sorted by
    number of anomalies, with its phase); phases: `mining_phases` of the AUROC curve (None when no
    point has both anomalies and a defined AUROC); files: name -> path of every file written.
    """

    out_dir: Path
    protocol: str
    rows: list[dict]
    summary: list[dict]
    phases: dict | None
    recommendation: str
    files: dict[str, Path]


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
    from defectmine.report.files import write_scores_csv

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

    Every point is fitted and evaluated as `workflow.fit_run` does (threshold from val, metrics on
    test, one split for all points) but writes no model: images are decoded once per sweep and each
    point takes a subset of the anomaly pool.
    """
    from defectmine.data.dataset import ImageDataset
    from defectmine.progress import progress_bar
    from defectmine.report.files import write_scores_csv
    from defectmine.report.sweep import write_sweep_files  # report.sweep imports this module: import here
    from defectmine.workflow import (
        PreparedData,
        build_datasets,
        create_detector,
        evaluate_scores,
        fit_detector,
        load_records,
        score_sets,
    )

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
    with progress_bar(quiet=quiet) as bar:
        task = bar.add_task("mining sweep", total=len(wanted), completed=len(done), status="")
        for point, seed in todo:
            bar.update(task, status=f"{point.label} seed {seed}: fitting")
            config = point.config(base, seed)
            # skip_bad may have dropped pool images: those are missing from fit_run's dataset too
            rows_in_pool = [pool_index[str(r.path)] for r in chosen[point.label, seed] if str(r.path) in pool_index]
            anomalous = pool.subset(rows_in_pool) if rows_in_pool else None
            prepared = PreparedData(split=split, normal=data.normal, anomalous=anomalous, val=data.val, test=data.test)
            detector = create_detector(config)
            fit_seconds = fit_detector(detector, prepared)
            val_scores, test_scores, score_ms = score_sets(detector, data.val, data.test)
            metrics = evaluate_scores(config, data.val, val_scores, data.test, test_scores)
            row = _row(point, seed, config_id, prepared, metrics, fit_seconds, score_ms, detector)
            rows.append(row)
            write_scores_csv(rows_path, rows)
            auroc = row["auroc"]
            bar.update(task, advance=1, status=f"{point.label} seed {seed}: AUROC "
                       + ("n/a" if auroc is None else f"{auroc:.3f}"))

    order = {(p.label, s): i for i, (p, s) in enumerate((p, s) for p in points for s in seeds)}
    rows.sort(key=lambda r: order[r["point"], r["seed"]])
    write_scores_csv(rows_path, rows)
    summary = summarise(rows)
    phases, recommendation = _phases_of(summary, tolerance)
    result = SweepResult(out_dir=out_dir, protocol=points[0].protocol, rows=rows, summary=summary, phases=phases,
                         recommendation=recommendation, files={})
    result.files = write_sweep_files(result, base, seeds=seeds, seconds=time.perf_counter() - started)
    return result


def _row(point: SweepPoint, seed: int, config_id: str, data, metrics: dict, fit_seconds: float,
         score_ms: float, detector) -> dict:
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
        "fit_seconds": fit_seconds, "score_ms_per_image": score_ms,
        "best_epoch": getattr(detector, "best_epoch_", None), "config_id": config_id,
    })
    return row


# -- summary --------------------------------------------------------------------------------------
def summarise(rows: Sequence[dict]) -> list[dict]:
    """Mean ± std over seeds per point, sorted by number of labelled anomalies.

    Each summary row holds the point's identity (point, protocol, ratio, k, n_anomalous, n_normal,
    seeds) and, for every metric of `_AGGREGATED` present in the rows, `<metric>` as "0.912 ± 0.004"
    (`format_mean_std`) plus the numbers `<metric>_mean` and `<metric>_std` (None when undefined in
    every seed).
    """
    if not rows:
        raise ConfigError("summarise: no sweep rows; run at least one point.")
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["point"], []).append(row)
    table = []
    for label, group in groups.items():
        first = group[0]
        stats = aggregate([{k: r.get(k) for k in _AGGREGATED if k in r} for r in group])
        entry = {
            "point": label, "protocol": first.get("protocol"), "ratio": first.get("ratio"), "k": first.get("k"),
            "n_anomalous": _int_mean(stats.get("n_anomalous")), "n_normal": _int_mean(stats.get("n_normal")),
            "seeds": len(group),
        }
        for key in _AGGREGATED[2:]:
            if key in stats and stats[key]["n"]:
                digits = 1 if key == "fit_seconds" else 3
                entry[key] = format_mean_std(stats[key], digits)
                entry[f"{key}_mean"], entry[f"{key}_std"] = stats[key]["mean"], stats[key]["std"]
        table.append(entry)
    return sorted(table, key=lambda e: (e["n_anomalous"] is None, e["n_anomalous"] or 0))


def _int_mean(stats: dict | None) -> int | None:
    return None if not stats or stats["mean"] is None else int(round(stats["mean"]))


def _phases_of(summary: list[dict], tolerance: float) -> tuple[dict | None, str]:
    """Phases of the AUROC curve over the points with anomalies; labels every summary row."""
    curve = [e for e in summary if (e["n_anomalous"] or 0) > 0 and e.get("auroc_mean") is not None]
    phases = None
    if curve:
        phases = mining_phases([e["n_anomalous"] for e in curve], [e["auroc_mean"] for e in curve], tolerance)
        recommendation = phases["recommendation"]
    else:
        recommendation = ("No point has both labelled anomalies and a defined test AUROC: add points with "
                          "anomalies (K >= 1) and a test set with both classes.")
    by_n = dict(zip(phases["n_anomalies"], phases["phases"])) if phases else {}
    for entry in summary:
        entry["phase"] = BASELINE if not entry["n_anomalous"] else by_n.get(entry["n_anomalous"], "n/a")
    return phases, recommendation


__all__ = [
    "BASELINE",
    "JSON_FILE",
    "METRICS",
    "METRIC_LABELS",
    "OPPORTUNITY",
    "OVER_MINING",
    "PLOT_FILE",
    "REPORT_FILE",
    "ROWS_FILE",
    "SUMMARY_FILE",
    "UNDETERMINED",
    "SweepPoint",
    "SweepResult",
    "merge_sweep_rows",
    "mining_phases",
    "phase_spans",
    "run_sweep",
    "summarise",
    "sweep_points",
]
