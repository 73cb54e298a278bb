"""One self-contained HTML report per run: metrics, curves, score histograms, heatmap gallery, config.

Every image is an inline base64 PNG and the CSS is inline, so the file can be mailed or archived
alone. All text that comes from data (names, groups, metric keys, config) goes through
``html.escape``; only ``extra_sections`` fragments are inserted as they are.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from defectmine import __version__
from defectmine.errors import ConfigError
from defectmine.report.files import to_jsonable
from defectmine.report.gallery import ReportImage, error_sections, gallery_html, skipped_files_html, worst_errors
from defectmine.report.markup import _esc, _flatten, _kv_table, data_uri, format_value, img_tag, page_head, table_html
from defectmine.report.plots import (
    binary_labels,
    confusion_matrix_png,
    pr_curve_png,
    roc_curve_png,
    score_histogram_png,
)

# Re-exported: the sweep report and callers building extra sections take them from here.
__all__ = ["ReportImage", "data_uri", "format_value", "img_tag", "page_head", "render_report", "table_html",
           "write_report"]


def _find_confusion(metrics: Mapping, threshold_value, y: np.ndarray, s: np.ndarray):
    keys = ("tn", "fp", "fn", "tp")
    for name in ("confusion", "confusion_matrix", "cm"):
        cm = metrics.get(name)
        if isinstance(cm, Mapping) and all(k in cm for k in keys):
            return cm
    if all(k in metrics for k in keys):
        return {k: metrics[k] for k in keys}
    if threshold_value is None or not math.isfinite(float(threshold_value)):
        return None
    pred = s >= float(threshold_value)
    return {
        "tn": int(((y == 0) & ~pred).sum()),
        "fp": int(((y == 0) & pred).sum()),
        "fn": int(((y == 1) & ~pred).sum()),
        "tp": int(((y == 1) & pred).sum()),
    }


def render_report(
    *,
    title: str,
    metrics: Mapping,
    threshold: Mapping,
    labels,
    scores,
    groups: list[str],
    top_images: list[ReportImage],
    config: Mapping,
    pixel_metrics: Mapping | None = None,
    extra_sections: list[tuple[str, str]] | None = None,
    confusion: Mapping | None = None,
    false_positives: list[ReportImage] | None = None,
    false_negatives: list[ReportImage] | None = None,
    skipped_files: list[Mapping] | None = None,
) -> str:
    """Render the run report as one self-contained HTML string.

    Args:
        title: page title.
        metrics: image-level metrics, e.g. ``{"auroc": 0.97, "ap": 0.81, "f1": 0.7}``; nested
            dicts are shown with dotted keys; None/NaN shows as "n/a".
        threshold: how the threshold was chosen, e.g. ``{"rule": "max_f1", "value": 3.2,
            "params": {...}}`` or an object with ``to_dict()`` (``evaluation.Threshold``); every
            entry is listed, and ``value`` is drawn on the histogram.
        labels: per-image 0/1 (or "normal"/"anomalous"), same order as ``scores``.
        scores: per-image anomaly scores.
        groups: per-image group name ("normal" or the defect class), for the histograms.
        top_images: gallery tiles in the order given; the caller decides which images to show.
        config: the run configuration, shown as JSON.
        pixel_metrics: optional pixel-level metrics table.
        extra_sections: ``(heading, html_fragment)`` appended at the end; the heading is escaped,
            the fragment is trusted HTML (build it with ``img_tag`` / ``table_html``).
        confusion: ``{"tn", "fp", "fn", "tp"}`` counts. By default taken from
            ``metrics["confusion"]`` (or ``"confusion_matrix"``, ``"cm"``, or top-level tn/fp/fn/tp
            keys), else counted from ``threshold["value"]`` with anomalous meaning
            ``score >= value``.
        false_positives, false_negatives: tiles of the worst errors at ``threshold["value"]``
            (see ``gallery.worst_errors``), each under its own heading with the number of such
            errors in the whole set; an empty list says "none", None leaves the section out.
        skipped_files: files skipped while decoding, ``{"path", "reason"}`` each; listed (with a
            note under the title) when there are any.

    ROC and PR curves need both classes; with one class they are replaced by a note.
    """
    y = binary_labels(labels)
    s = np.asarray(scores, dtype=float).ravel()
    g = [str(x) for x in groups]
    if not (len(y) == len(s) == len(g)):
        raise ConfigError(
            f"render_report: got {len(y)} labels, {len(s)} scores and {len(g)} groups; "
            "pass one of each per image, in the same order."
        )
    if callable(getattr(threshold, "to_dict", None)):  # evaluation.Threshold
        threshold = threshold.to_dict()
    threshold = dict(threshold or {})
    t_value = threshold.get("value")

    n_anom = int(y.sum())
    counts = Counter(g)
    group_txt = ", ".join(f"{_esc(k)}: {v}" for k, v in sorted(counts.items()))
    parts = [
        page_head(title),
        f'<p class="sub">{len(y)} images: {len(y) - n_anom} normal, {n_anom} anomalous '
        f"({group_txt}) · defectmine {_esc(__version__)}</p>",
    ]
    if skipped_files:
        parts.append(f'<p class="note">{len(skipped_files)} file(s) could not be decoded and were left out: '
                     'see <a href="#skipped-files">Skipped files</a>.</p>')

    # Metrics
    tables = [_kv_table("Image metrics", _flatten(metrics))]
    tables.append(_kv_table("Threshold", [(f"threshold {k}", v) for k, v in _flatten(threshold)]))
    if pixel_metrics:
        tables.append(_kv_table("Pixel metrics", _flatten(pixel_metrics)))
    parts += ["<h2>Metrics</h2>", '<div class="tables">', *tables, "</div>"]

    # Curves
    parts.append("<h2>ROC and precision-recall</h2>")
    finite = bool(np.isfinite(s).all()) and len(s) > 0
    if finite and 0 < n_anom < len(y):
        parts += [
            '<div class="plots">',
            img_tag(roc_curve_png(y, s), "ROC curve", "plot"),
            img_tag(pr_curve_png(y, s), "Precision-recall curve", "plot"),
            "</div>",
        ]
    else:
        why = "some scores are NaN or inf" if not finite else (
            f"all {len(y)} images are {'anomalous' if n_anom else 'normal'}"
        )
        parts.append(
            f'<p class="note">ROC and PR curves need both normal and anomalous images with finite '
            f"scores; not drawn because {_esc(why)}.</p>"
        )

    # Distribution and confusion matrix
    parts += ["<h2>Scores</h2>", '<div class="plots">']
    if len(s):
        parts.append(img_tag(score_histogram_png(s, g, t_value), "Score histograms per group", "plot"))
    cm = confusion if confusion is not None else _find_confusion(metrics, t_value, y, s)
    if cm is not None:
        parts.append(img_tag(confusion_matrix_png(cm), "Confusion matrix", "plot"))
    parts.append("</div>")
    if cm is None:
        parts.append('<p class="note">No threshold value: confusion matrix not drawn.</p>')

    # Gallery
    parts += [f"<h2>Top images ({len(top_images)})</h2>", gallery_html(top_images)]
    if false_positives is not None or false_negatives is not None:
        errors = (0, 0)
        if t_value is not None and math.isfinite(float(t_value)):  # how many there are, beyond those shown
            errors = tuple(len(e) for e in worst_errors(y, s, t_value, len(s)))
        parts += error_sections(false_positives, false_negatives, t_value, errors)
    if skipped_files:
        parts += [f'<h2 id="skipped-files">Skipped files ({len(skipped_files)})</h2>',
                  '<p class="sub">Unreadable images left out of every set (--skip-bad).</p>',
                  skipped_files_html(skipped_files)]

    # Config
    cfg = json.dumps(to_jsonable(config), indent=2, ensure_ascii=False)
    parts += [
        "<h2>Configuration</h2>",
        f"<details><summary>config.json</summary><pre>{_esc(cfg)}</pre></details>",
    ]

    for heading, fragment in extra_sections or []:
        parts += [f"<h2>{_esc(heading)}</h2>", str(fragment)]

    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(path, **kwargs) -> Path:
    """Render with ``render_report(**kwargs)`` and write UTF-8 HTML to ``path``; returns the path."""
    path = Path(path)
    text = render_report(**kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
