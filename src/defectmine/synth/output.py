"""Synthetic image/mask pairs into the folder layout (anomalous/<class>/, masks/anomalous/<class>/)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from defectmine.report.files import save_png


def write_synthetic_defects(root: Path | str, defect_class: str, images_uint8, masks, *, prefix: str = "synth") -> list[Path]:
    """Write images (n, C, H, W) uint8 and masks (n, H, W) (non-zero = defect) as PNGs; returns the image paths.

    root/anomalous/<class>/<prefix>_0000.png with its binary mask at root/masks/anomalous/<class>/ (the
    layout `scan_folder` reads), so a fit run takes them as extra labelled defects of that class.
    """
    root = Path(root)
    paths = []
    for i, (image, mask) in enumerate(zip(np.asarray(images_uint8), np.asarray(masks))):
        name = f"{prefix}_{i:04d}.png"
        pixels = image[0] if image.shape[0] == 1 else np.ascontiguousarray(image.transpose(1, 2, 0))
        paths.append(save_png(root / "anomalous" / defect_class / name, pixels))
        save_png(root / "masks" / "anomalous" / defect_class / name, (mask != 0).astype(np.uint8) * 255)
    return paths
