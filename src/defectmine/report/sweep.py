"""What a mining sweep shows a person: its summary table (CLI, Markdown, HTML), the mining curve, and
the self-contained HTML page (recommendation, curve, summary table, runs, config); and the files of a
finished sweep. The numbers themselves come from ``defectmine.evaluation.sweep``.

The page is built from the run report's pieces (its CSS, ``table_html``, ``img_tag``); a sweep has no
per-image scores, so ``render_report`` itself does not fit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from defectmine import __version__
from defectmine.errors import ConfigError
from defectmine.evaluation.sweep import (
    JSON_FILE,
    METRIC_LABELS,
    METRICS,
    PLOT_FILE,
    REPORT_FILE,
    ROWS_FILE,
    SUMMARY_FILE,
    SweepResult,
    phase_spans,
)
from defectmine.report.files import to_jsonable, write_json, write_scores_csv
from defectmine.report.plots import curve_png
from defectmine.report.html import _esc, format_value, img_tag, page_head, table_html

_PROTOCOLS = {"k": "K labelled anomalies", "ratio": "positive ratios"}
_RUN_COLUMNS = ("point", "seed", "n_anomalous", "n_normal", "auroc", "auprc", "f1", "precision", "recall",
                "val_auroc", "threshold", "pixel_auroc", "fit_seconds", "best_epoch")  # fmt: skip


def _gains_table(phases: Mapping) -> str:
    xs = phases["n_anomalies"]
    rows = [
        {"from": xs[i], "to": xs[i + 1], "gain per doubling (running best)": gain,
         "raw gain per doubling": raw, "phase of 'to'": phases["phases"][i + 1]}
        for i, (gain, raw) in enumerate(zip(phases["gain_per_doubling"], phases["raw_gain_per_doubling"]))
    ]
    return table_html(rows) if rows else ""


def render_sweep_report(*, title: str, document: Mapping, table: Sequence[Mapping], plot_png: bytes | None) -> str:
    """Render a sweep as one HTML string.

    Args:
        title: page title.
        document: the sweep.json content: protocol, points, seeds, config, recommendation, phases
            (from ``mining_phases`` or None), rows (one per point and seed).
        table: the summary as display rows (``display_rows``).
        plot_png: the mining curve (``mining_curve_png``), or None when no point has
            labelled anomalies.
    """
    phases = document.get("phases")
    seeds = document.get("seeds") or []
    rows = document.get("rows") or []
    config = document.get("config") or {}
    parts = [
        page_head(title),
        f'<p class="sub">{len(table)} points ({_esc(_PROTOCOLS.get(document.get("protocol"), ""))}) × {len(seeds)} seed(s) '
        f"{_esc(', '.join(str(s) for s in seeds))} · {len(rows)} fits · phases read from val AUROC, test metrics beside it, threshold from val · "
        f"defectmine {_esc(__version__)} · {_esc(document.get('created', ''))}</p>",
        "<h2>Recommendation</h2>",
        f'<p class="note">{_esc(document.get("recommendation", ""))}</p>',
    ]
    if phases:
        parts.append(
            f"<p>Rule: points sorted by number of labelled anomalies; the gain per doubling between successive "
            f"points is the rise of the running-best {_esc(phases['metric'])} divided by log2 of the ratio of their "
            f"anomaly counts. Over-mining starts at the first point after which every gain per doubling stays below "
            f"{_esc(format_value(phases['tolerance']))}; earlier points are the mining-opportunity phase.</p>"
        )
        parts.append(_gains_table(phases))
    if plot_png:
        parts += ["<h2>Mining curve</h2>", '<div class="plots">', img_tag(plot_png, "mining curve", "plot"), "</div>"]
    parts += ["<h2>Summary (mean ± std over seeds)</h2>", table_html(list(table))]
    columns = [c for c in _RUN_COLUMNS if any(r.get(c) is not None for r in rows)]
    parts += [
        "<h2>Runs</h2>",
        f"<details><summary>{len(rows)} runs (one per point and seed)</summary>{table_html(rows, columns)}</details>",
        "<h2>Configuration</h2>",
        f"<details><summary>sweep settings</summary><pre>"
        f"{_esc(json.dumps(to_jsonable(config), indent=2, ensure_ascii=False))}</pre></details>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_sweep_report(path, **kwargs) -> Path:
    """Render with ``render_sweep_report(**kwargs)`` and write UTF-8 HTML to ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_sweep_report(**kwargs), encoding="utf-8")
    return path


# -- tables, curve and files ------------------------------------------------------------------
def display_rows(summary: Sequence[dict]) -> list[dict]:
    """The summary as text cells for tables (CLI, HTML, Markdown): one dict per point."""
    out = []
    for e in summary:
        n, normal = e["n_anomalous"] or 0, e["n_normal"] or 0
        row = {
            "point": e["point"], "anomalies": n, "normals": normal,
            "positive ratio": f"1/{normal / n:.3g}" if n else "0",
            "seeds": e["seeds"],
            "val AUROC": e.get("val_auroc", "n/a"),  # the curve the phases are read from
        }
        for key in METRICS:
            row[METRIC_LABELS[key]] = e.get(key, "n/a")
        if "pixel_auroc" in e:
            row["pixel AUROC"] = e["pixel_auroc"]
        row["fit s"] = e.get("fit_seconds", "n/a")
        row["phase"] = e.get("phase", "")
        out.append(row)
    return out


def markdown_table(summary: Sequence[dict]) -> str:
    """The display rows as a GitHub Markdown table (for BENCHMARKS.md)."""
    rows = display_rows(summary)
    if not rows:
        return ""
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


# -- outputs --------------------------------------------------------------------------------------
def mining_curve_png(summary: Sequence[dict], phases: dict | None = None,
                     metrics: Sequence[str] = ("val_auroc", "auroc", "auprc", "f1"), *,
                     title: str | None = None) -> bytes:
    """Validation AUROC (which the phases are read from) and test metrics, mean ± std over seeds, against
    the number of labelled anomalies, log2 x axis, with the mining-opportunity and over-mining phases
    shaded and labelled.

    Points without anomalies (K=0) cannot sit on a log axis; their AUROC is drawn as a flat reference
    line instead.
    """
    curve = sorted((e for e in summary if (e["n_anomalous"] or 0) > 0), key=lambda e: e["n_anomalous"])
    if not curve:
        raise ConfigError("mining_curve_png: no point with labelled anomalies to draw (K=0 only).")
    x = [e["n_anomalous"] for e in curve]

    def series(key: str):
        mean = [e.get(f"{key}_mean") for e in curve]
        std = [e.get(f"{key}_std") for e in curve]
        return [np.nan if v is None else v for v in mean], [0.0 if v is None else v for v in std]

    labels = {**{k: f"test {v}" for k, v in METRIC_LABELS.items()}, "val_auroc": "val AUROC (phases)"}
    ys = {labels.get(m, m): series(m) for m in metrics if any(e.get(f"{m}_mean") is not None for e in curve)}
    baseline = [e for e in summary if not e["n_anomalous"] and e.get("auroc_mean") is not None]
    if baseline:
        ys[f"test AUROC, {baseline[0]['point']} (no labelled anomalies)"] = ([baseline[0]["auroc_mean"]] * len(x), None)
    return curve_png(x, ys, "labelled anomalies in training (log2)", "metric", log2_x=True,
                     shade=phase_spans(phases) if phases else None, title=title)


def write_sweep_files(result: SweepResult, base, *, seeds: list[int], seconds: float | None = None,
                      environment: dict | None = None) -> dict[str, Path]:
    """sweep.csv, sweep.json, sweep.png and report.html of a finished sweep; returns name -> path.

    `environment` (versions and machine, from the pipeline) is recorded in sweep.json.
    """
    out = Path(result.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"rows": out / ROWS_FILE, "summary": write_scores_csv(out / SUMMARY_FILE, result.summary)}
    config = {k: v for k, v in asdict(base).items() if k not in ("k", "ratio", "seed", "quiet")}
    document = {
        "protocol": result.protocol,
        "points": list(dict.fromkeys(r["point"] for r in result.rows)),
        "seeds": seeds,
        "config": config,
        "recommendation": result.recommendation,
        "phases": result.phases,
        "summary": result.summary,
        "rows": result.rows,
        "seconds": seconds,
        "environment": environment,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    files["json"] = write_json(out / JSON_FILE, document)
    title = f"Mining sweep: {base.detector} on {base.data}"
    plot = None
    if any((e["n_anomalous"] or 0) > 0 for e in result.summary):
        plot = mining_curve_png(result.summary, result.phases, title=title)
        files["plot"] = out / PLOT_FILE
        files["plot"].write_bytes(plot)
    files["report"] = write_sweep_report(out / REPORT_FILE, title=title, document=document,
                                         table=display_rows(result.summary), plot_png=plot)
    return files


__all__ = [
    "display_rows",
    "markdown_table",
    "mining_curve_png",
    "render_sweep_report",
    "write_sweep_files",
    "write_sweep_report",
]
