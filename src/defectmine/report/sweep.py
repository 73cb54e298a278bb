"""The self-contained HTML page of a mining sweep: recommendation, curve, summary table, runs, config.

Built from the run report's pieces (its CSS, ``table_html``, ``img_tag``); a sweep has no per-image
scores, so ``render_report`` itself does not fit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from defectmine import __version__
from defectmine.report.files import to_jsonable
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
        table: the summary as display rows (``evaluation.sweep.display_rows``).
        plot_png: the mining curve (``evaluation.sweep.mining_curve_png``), or None when no point has
            labelled anomalies.
    """
    phases = document.get("phases")
    seeds = document.get("seeds") or []
    rows = document.get("rows") or []
    config = document.get("config") or {}
    parts = [
        page_head(title),
        f'<p class="sub">{len(table)} points ({_esc(_PROTOCOLS.get(document.get("protocol"), ""))}) × {len(seeds)} seed(s) '
        f"{_esc(', '.join(str(s) for s in seeds))} · {len(rows)} fits · test metrics, threshold from val · "
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


__all__ = ["render_sweep_report", "write_sweep_report"]
