"""Run outputs: JSON/CSV/PNG files, report plots and the self-contained HTML report."""

from defectmine.report.files import (
    encode_png,
    read_json,
    save_png,
    to_jsonable,
    write_json,
    write_scores_csv,
)
from defectmine.report.gallery import ReportImage, gallery_html, mask_outline, side_by_side, tile_image, worst_errors
from defectmine.report.html import render_report, write_report
from defectmine.report.markup import data_uri, format_value, img_tag, table_html
from defectmine.report.segment import class_overlay, palette_png, save_palette_png, write_segment_report
from defectmine.report.plots import (
    confusion_matrix_png,
    curve_png,
    pr_curve_png,
    roc_curve_png,
    score_histogram_png,
)

__all__ = [
    "ReportImage",
    "class_overlay",
    "confusion_matrix_png",
    "curve_png",
    "data_uri",
    "encode_png",
    "format_value",
    "gallery_html",
    "img_tag",
    "mask_outline",
    "palette_png",
    "pr_curve_png",
    "read_json",
    "render_report",
    "roc_curve_png",
    "save_palette_png",
    "save_png",
    "score_histogram_png",
    "side_by_side",
    "table_html",
    "tile_image",
    "to_jsonable",
    "write_json",
    "write_report",
    "write_scores_csv",
    "write_segment_report",
    "worst_errors",
]
