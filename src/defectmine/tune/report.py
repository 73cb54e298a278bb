"""The files of a tune folder: trials.csv (one row per trial), trials.png (value per trial and best so
far), best_config.json (a run config `defectmine fit --config` takes), tune.json and report.html,
built from the report package's pieces (page head, tables, inline images, curve plot)."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

from defectmine import __version__
from defectmine.pipeline.config import RunConfig
from defectmine.pipeline.run_folder import write_atomic
from defectmine.pipeline.runinfo import environment
from defectmine.report.files import to_jsonable, write_json, write_scores_csv
from defectmine.report.markup import _esc, format_value, img_tag, page_head, table_html
from defectmine.report.plots import curve_png
from defectmine.tune.space import Dimension, trial_params

TRIALS_CSV = "trials.csv"
TRIALS_PNG = "trials.png"
BEST_CONFIG = "best_config.json"
TUNE_JSON = "tune.json"
REPORT_FILE = "report.html"


def trial_rows(study, dimensions: list[Dimension], metric: str) -> list[dict]:
    """One row per trial: number, state, value (complete trials only), the proposed options, the
    epochs seen, the selected epoch, seconds, and the error of a failed trial."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        state = t.state.name.lower()
        ended, began = t.datetime_complete, t.datetime_start
        seconds = (ended - began).total_seconds() if ended and began else None
        row = {"trial": t.number, "state": state, f"val_{metric}": t.value if state == "complete" else None}
        row.update({dim.name: t.params.get(dim.name) for dim in dimensions})
        row["last_curve_value"] = t.intermediate_values[t.last_step] if t.last_step is not None else None
        row["epochs_validated"] = len(t.intermediate_values)
        row["best_epoch"] = None if t.user_attrs.get("best_epoch") is None else t.user_attrs["best_epoch"] + 1
        row["seconds"] = seconds
        row["error"] = t.user_attrs.get("error", "interrupted" if state in ("fail", "running") else "")
        rows.append(row)
    return rows


def trials_png(rows: list[dict], metric: str) -> bytes:
    """Validation value per trial (complete trials) and the best so far."""
    key = f"val_{metric}"
    values = [math.nan if r[key] is None else float(r[key]) for r in rows]
    best, running = [], -math.inf
    for v in values:
        running = max(running, v) if not math.isnan(v) else running
        best.append(running if running > -math.inf else math.nan)
    return curve_png([r["trial"] for r in rows], {f"trial value (val {metric})": (values, None),
                                                  "best so far": (best, None)},
                     "trial", f"validation {metric}", title="defectmine tune: trials")


def best_run_config(study, base: RunConfig, dimensions: list[Dimension]) -> RunConfig:
    """`base` with the best trial's options: what `fit --config best_config.json` fits."""
    params = trial_params(dimensions, study.best_trial.params, base.detector_params)
    return replace(base, detector_params=params, quiet=False)


def write_tune_outputs(out_dir: Path, study, settings: dict, base: RunConfig, dimensions: list[Dimension],
                       metric: str, *, n_test_left_out: int | None, seconds: float):
    """Write trials.csv, trials.png, best_config.json (once a trial has completed), tune.json and
    report.html, each replaced in one step; returns the TuneResult."""
    from defectmine.tune.study import STUDY_FILE, TuneResult, counted_trials, optuna_module

    out_dir = Path(out_dir)
    rows = trial_rows(study, dimensions, metric)
    files = {"study": out_dir / STUDY_FILE}
    files["trials"] = write_atomic(out_dir / TRIALS_CSV, lambda p: write_scores_csv(p, rows))
    complete = [r for r in rows if r["state"] == "complete"]
    best = None
    if complete:
        trial = study.best_trial
        config = best_run_config(study, base, dimensions)
        best = {"trial": trial.number, "value": trial.value, "metric": metric, "params": trial.params}
        document = {"run": asdict(config), "tune": {**best, "study": str(out_dir.resolve() / STUDY_FILE)}}
        files["best_config"] = write_atomic(out_dir / BEST_CONFIG, lambda p: write_json(p, document))
    plot = trials_png(rows, metric) if rows else None
    if plot:
        files["plot"] = write_atomic(out_dir / TRIALS_PNG, lambda p: p.write_bytes(plot))
    counts = {state: sum(r["state"] == state for r in rows) for state in ("complete", "pruned", "fail", "running")}
    summary = {
        "settings": settings, "counts": counts, "counted_trials": counted_trials(study, optuna_module()),
        "best": best, "test_records_left_out": n_test_left_out, "seconds_this_call": seconds,
        "environment": environment(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    files["json"] = write_atomic(out_dir / TUNE_JSON, lambda p: write_json(p, summary))
    page = render_tune_report(summary, rows, plot, base)
    files["report"] = write_atomic(out_dir / REPORT_FILE, lambda p: p.write_text(page, encoding="utf-8"))
    return TuneResult(out_dir, summary["counted_trials"], None if best is None else best["value"],
                      None if best is None else best["params"], files, rows)


def render_tune_report(summary: dict, rows: list[dict], plot: bytes | None, base: RunConfig) -> str:
    """The tune page: best trial, the trials plot, the trials table and the study settings."""
    best, counts = summary["best"], summary["counts"]
    metric = summary["settings"]["metric"]
    parts = [
        page_head(f"defectmine tune - {base.detector} on {base.data}"),
        f'<p class="sub">{len(rows)} trials ({counts["complete"]} complete, {counts["pruned"]} pruned, '
        f'{counts["fail"]} failed) · value: validation {_esc(metric)} · test images never used '
        f"({_esc(format_value(summary['test_records_left_out']))} left out before decoding) · "
        f"defectmine {_esc(__version__)} · {_esc(summary['created'])}</p>",
        "<h2>Best trial</h2>",
    ]
    if best:
        parts.append(table_html([{"trial": best["trial"], f"val {metric}": best["value"], **best["params"]}]))
        parts.append(f'<p>Fit it with <code>defectmine fit --config {_esc(BEST_CONFIG)} --out runs/best</code> '
                     "(test metrics come from that fit, never from the search).</p>")
    else:
        parts.append('<p class="note">no trial has completed yet.</p>')
    if plot:
        parts += ["<h2>Trials</h2>", '<div class="plots">', img_tag(plot, "trials", "plot"), "</div>"]
    parts += [
        table_html(rows),
        "<h2>Study settings</h2>",
        f"<details><summary>run settings and search space</summary><pre>"
        f"{_esc(json.dumps(to_jsonable(summary['settings']), indent=2, ensure_ascii=False))}</pre></details>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
