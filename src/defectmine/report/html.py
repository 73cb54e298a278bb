"""One self-contained HTML report per run: metrics, curves, score histograms, heatmap gallery, config.

Every image is an inline base64 PNG and the CSS is inline, so the file can be mailed or archived
alone. All text that comes from data (names, groups, metric keys, config) goes through
``html.escape``; only ``extra_sections`` fragments are inserted as they are.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from defectmine import __version__
from defectmine.errors import ConfigError
from defectmine.report.files import encode_png, to_jsonable
from defectmine.report.plots import (
    binary_labels,
    confusion_matrix_png,
    pr_curve_png,
    roc_curve_png,
    score_histogram_png,
)


@dataclass
class ReportImage:
    """One gallery tile: an image with its heatmap already blended in (see ``explain.overlay``)."""

    name: str
    overlay: np.ndarray  # uint8 (H, W, 3) RGB
    score: float
    label: str  # "normal" / "anomalous"
    group: str  # defect class, or "normal"


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 2rem auto; max-width: 72rem; padding: 0 1rem; color: #222; line-height: 1.4; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; }
h2 { font-size: 1.2rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2rem; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: .5rem 0; font-size: .92rem; }
th, td { border: 1px solid #ddd; padding: .25rem .6rem; text-align: left; }
th { background: #f5f5f5; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.tables { display: flex; flex-wrap: wrap; gap: 2rem; align-items: flex-start; }
.plots { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }
.plots img { max-width: 100%; border: 1px solid #eee; }
.note { color: #8a5300; background: #fff7e6; border-left: 3px solid #f0a020; padding: .4rem .7rem; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(12rem, 1fr)); gap: .8rem; }
.gallery figure { margin: 0; border: 1px solid #ddd; border-radius: 4px; overflow: hidden; }
.gallery figure.anomalous { border-color: #c44e52; }
.gallery img { width: 100%; display: block; image-rendering: pixelated; }
.gallery figcaption { font-size: .8rem; padding: .3rem .4rem; word-break: break-all; }
.gallery .score { font-variant-numeric: tabular-nums; font-weight: 600; }
pre { background: #f7f7f7; padding: .8rem; overflow-x: auto; font-size: .85rem; }
details summary { cursor: pointer; }
"""


def _esc(x) -> str:
    return html.escape(str(x), quote=True)


def page_head(title: str) -> str:
    """The opening of every defectmine page: doctype, inline CSS, the title as <h1>."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>\n<h1>{_esc(title)}</h1>"
    )


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` URI of PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def img_tag(png: bytes, alt: str, cls: str | None = None) -> str:
    """An ``<img>`` tag embedding PNG bytes; for building ``extra_sections`` fragments."""
    c = f' class="{_esc(cls)}"' if cls else ""
    return f'<img{c} src="{data_uri(png)}" alt="{_esc(alt)}">'


def format_value(v) -> str:
    """Human-readable metric value: None/NaN → "n/a", floats to 4 decimals (or 4 significant digits)."""
    v = to_jsonable(v)
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v == 0 or 1e-3 <= abs(v) < 1e4:
            return f"{v:.4f}"
        return f"{v:.4g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v, ensure_ascii=False)
    return str(v)


def _flatten(d: Mapping, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.extend(_flatten(v, key + "."))
        else:
            out.append((key, v))
    return out


def table_html(rows: Sequence[Mapping], columns: Sequence[str] | None = None) -> str:
    """A plain HTML table from a list of dicts (all text escaped, numbers via ``format_value``)."""
    if not rows:
        return '<p class="note">no rows</p>'
    cols = list(columns) if columns is not None else list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{_esc(c)}</th>" for c in cols)
    body = []
    for r in rows:
        body.append("<tr>" + "".join(_td(r.get(c)) for c in cols) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _td(v) -> str:
    cls = ' class="num"' if _is_number(v) or v is None else ""
    return f"<td{cls}>{_esc(format_value(v))}</td>"


def _kv_table(caption: str, items: list[tuple[str, object]]) -> str:
    rows = "".join(f"<tr><th>{_esc(k)}</th>{_td(v)}</tr>" for k, v in items)
    return f"<div><h3>{_esc(caption)}</h3><table><tbody>{rows}</tbody></table></div>"


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


def _gallery(images: Sequence[ReportImage]) -> str:
    if not images:
        return '<p class="note">No images selected for the gallery.</p>'
    tiles = []
    for im in images:
        if not isinstance(im, ReportImage):
            raise ConfigError(f"top_images must hold ReportImage objects, got {type(im).__name__}.")
        label = str(im.label)
        group = f" · {_esc(im.group)}" if str(im.group) not in ("", label) else ""
        tiles.append(
            f'<figure class="{"anomalous" if label == "anomalous" else "normal"}">'
            f"{img_tag(encode_png(np.asarray(im.overlay)), alt=im.name, cls='tile')}"
            f"<figcaption>{_esc(im.name)}<br><span class='score'>{_esc(format_value(im.score))}</span>"
            f" · {_esc(label)}{group}</figcaption></figure>"
        )
    return '<div class="gallery">' + "".join(tiles) + "</div>"


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
    parts += [f"<h2>Top images ({len(top_images)})</h2>", _gallery(top_images)]

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
