"""Heatmaps: receptive-field Gaussian upsampling, Grad-CAM, shared display ranges, overlays and grids."""

from defectmine.explain.display import display_range, to_unit
from defectmine.explain.gradcam import detector_gradcam, grad_cam, last_convolution
from defectmine.explain.overlay import as_rgb_uint8, colorize, grid, overlay
from defectmine.explain.upsample import DEFAULT_SIGMA_PER_CELL, gaussian_upsample

__all__ = [
    "DEFAULT_SIGMA_PER_CELL",
    "as_rgb_uint8",
    "colorize",
    "detector_gradcam",
    "display_range",
    "gaussian_upsample",
    "grad_cam",
    "grid",
    "last_convolution",
    "overlay",
    "to_unit",
]
