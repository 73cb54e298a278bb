"""Heatmaps: receptive-field Gaussian upsampling, Grad-CAM, shared display ranges, overlays and grids.

Display ranges and overlays need no torch (an exported model's maps are drawn without it); upsampling
and Grad-CAM are imported on first use (`defectmine._lazy`).
"""

from defectmine._lazy import lazy_exports
# Imported here, not lazily: the function `overlay` must shadow the submodule of the same name.
from defectmine.explain.display import display_range, to_unit
from defectmine.explain.overlay import as_rgb_uint8, colorize, grid, overlay

_EXPORTS = {
    "DEFAULT_SIGMA_PER_CELL": "upsample",
    "detector_gradcam": "gradcam",
    "gaussian_upsample": "upsample",
    "grad_cam": "gradcam",
    "last_convolution": "gradcam",
}
__all__ = sorted([*_EXPORTS, "as_rgb_uint8", "colorize", "display_range", "grid", "overlay", "to_unit"])
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
