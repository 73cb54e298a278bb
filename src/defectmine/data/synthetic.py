"""A tiny synthetic inspection dataset for tests and demos, written in milliseconds.

Normal images are a smooth gray texture; defects are obvious on purpose ("scratch": a bright line,
"spot": a dark blob, both outside the texture's value range) so that any working detector ranks
them above the normals.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from defectmine.errors import ConfigError

DEFECT_CLASSES = ("scratch", "spot")


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    coarse = rng.normal(0.0, 1.0, size=(max(2, size // 8),) * 2).astype(np.float32)
    smooth = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    fine = rng.normal(0.0, 4.0, size=(size, size)).astype(np.float32)
    # Kept within 40..215 so that the defects (255 and 10) are out of the normal range.
    return np.clip(128.0 + 25.0 * smooth + fine, 40, 215).astype(np.uint8)


def _scratch(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    size = image.shape[0]
    y0, y1 = (int(v) for v in rng.integers(size // 8, size - size // 8, size=2))
    x0, x1 = size // 8, size - 1 - size // 8
    thickness = max(1, size // 16)
    cv2.line(image, (x0, y0), (x1, y1), 255, thickness)
    cv2.line(mask, (x0, y0), (x1, y1), 255, thickness)


def _spot(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    size = image.shape[0]
    cy, cx = (int(v) for v in rng.integers(size // 4, size - size // 4, size=2))
    radius = max(2, size // 7)
    cv2.circle(image, (cx, cy), radius, 10, -1)
    cv2.circle(mask, (cx, cy), radius, 255, -1)


def write_synthetic_folder(
    root: Path | str, n_normal: int = 24, n_anomalous: int = 8, size: int = 32, seed: int = 0
) -> Path:
    """Write a `scan_folder` layout of grayscale PNGs under `root` and return `root`.

    root/normal/normal_XXX.png, root/anomalous/{scratch,spot}/<class>_XXX.png (classes alternate) and
    their masks under root/masks/anomalous/<class>/. Deterministic per seed.
    """
    if n_normal < 1 or n_anomalous < 0 or size < 8:
        raise ConfigError(
            f"write_synthetic_folder(n_normal={n_normal}, n_anomalous={n_anomalous}, size={size}) is invalid. "
            "Fix: use n_normal >= 1, n_anomalous >= 0 and size >= 8."
        )
    root = Path(root)
    rng = np.random.default_rng(seed)
    normal_dir = root / "normal"
    normal_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n_normal):
        cv2.imwrite(str(normal_dir / f"normal_{i:03d}.png"), _texture(rng, size))
    draw = {"scratch": _scratch, "spot": _spot}
    for i in range(n_anomalous):
        defect = DEFECT_CLASSES[i % len(DEFECT_CLASSES)]
        image = _texture(rng, size)
        mask = np.zeros((size, size), dtype=np.uint8)
        draw[defect](image, mask, rng)
        name = f"{defect}_{i:03d}.png"
        for folder, pixels in ((root / "anomalous" / defect, image), (root / "masks" / "anomalous" / defect, mask)):
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / name), pixels)
    return root
