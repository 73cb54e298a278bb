"""Run outputs: JSON/CSV/PNG files, report plots and the self-contained HTML report."""

from defectmine.report.files import (
    encode_png,
    read_json,
    save_png,
    to_jsonable,
    write_json,
    write_scores_csv,
)
from defectmine.report.html import (
    ReportImage,
    data_uri,
    format_value,
    img_tag,
    render_report,
    table_html,
    write_report,
)
from defectmine.report.plots import (
    confusion_matrix_png,
    curve_png,
    pr_curve_png,
    roc_curve_png,
    score_histogram_png,
)

__all__ = [
    "ReportImage",
    "confusion_matrix_png",
    "curve_png",
    "data_uri",
    "encode_png",
    "format_value",
    "img_tag",
    "pr_curve_png",
    "read_json",
    "render_report",
    "roc_curve_png",
    "save_png",
    "score_histogram_png",
    "table_html",
    "to_jsonable",
    "write_json",
    "write_report",
    "write_scores_csv",
]
