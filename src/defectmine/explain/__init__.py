"""Heatmaps: receptive-field Gaussian upsampling, shared display ranges, overlays and grids."""

from defectmine.explain.display import display_range, to_unit
from defectmine.explain.overlay import as_rgb_uint8, colorize, grid, overlay
from defectmine.explain.upsample import DEFAULT_SIGMA_PER_CELL, gaussian_upsample

__all__ = [
    "DEFAULT_SIGMA_PER_CELL",
    "as_rgb_uint8",
    "colorize",
    "display_range",
    "gaussian_upsample",
    "grid",
    "overlay",
    "to_unit",
]
