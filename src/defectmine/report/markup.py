"""HTML building blocks shared by the run and sweep reports: the page head with its inline CSS,
escaped text, inline PNG images, formatted values and tables. Everything from data is escaped."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence

import numpy as np

from defectmine.report.files import to_jsonable

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
.gallery figure.pair { grid-column: span 2; }
.gallery .panels { color: #666; }
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
