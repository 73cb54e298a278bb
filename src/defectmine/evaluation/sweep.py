"""Damage-mining sweeps: how detection improves as labelled anomalies are added.

The deeper-FCDD study (Yasuno et al., sections 3-4, Table 2) trains one detector per positive ratio
1/1, 1/2, ..., 1/128 and "unsupervised" (one anomaly) against a fixed set of normals, and reads two
phases off the accuracy curve: a *damage vision mining opportunity* phase, where more labelled defects
still raise the AUROC, and an *over-mining* phase, where they no longer do. This module holds the
computing half: the sweep's points, the phase rule, and the summary (mean ± std per point) with its
recommendation, read from the validation AUROC so that the advice is never tuned on the test set.
`defectmine.pipeline.sweep` runs the fits; `defectmine.report.sweep` draws the table, curve and page.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from defectmine.errors import ConfigError
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


def phases_of(summary: list[dict], tolerance: float) -> tuple[dict | None, str]:
    """Phases of the validation-AUROC curve over the points with anomalies; labels every summary row.

    The recommendation reads validation AUROC, never test AUROC: choosing how many defects to collect
    is a decision, and decisions are tuned on validation data (test AUROC is shown beside it).
    """
    curve = [e for e in summary if (e["n_anomalous"] or 0) > 0 and e.get("val_auroc_mean") is not None]
    phases = None
    if curve:
        phases = mining_phases([e["n_anomalous"] for e in curve], [e["val_auroc_mean"] for e in curve], tolerance,
                               metric="validation AUROC")
        recommendation = phases["recommendation"]
    else:
        recommendation = ("No point has both labelled anomalies and a defined validation AUROC: add points with "
                          "anomalies (K >= 1) and a validation set with both classes.")
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
    "mining_phases",
    "phase_spans",
    "phases_of",
    "summarise",
    "sweep_points",
]
