"""Pack the benchmark sets, already resized, into a folder small enough to travel to a GPU machine.

The full Magnetic Tile folder and the ELPV package together exceed what can be sent to a rented GPU
box, and every benchmark reads images at 128 px anyway. This writes

    <out>/shared/splits/{magnetic_tile,elpv}.csv    the fixed splits, same rows and order (MT X.jpg -> X.jpg.png)
    <out>/shared/splits/magnetic_tile_seg_s*.csv     the segmentation protocol's splits, the same way
    <out>/shared/datasets/magnetic-tile/...          MT images and masks at SIZE x SIZE, lossless PNG
    <out>/elpv/labels.csv, <out>/elpv/images/...     ELPV cells at SIZE x SIZE, lossless PNG

with exactly the resize the library applies (`prepare_image` / `prepare_mask`), so a benchmark run with
`DEFECTMINE_SHARED=<out>/shared DEFECTMINE_ELPV=<out>/elpv` at image size SIZE decodes the very same
pixels as one on the original files (the library skips resizing an image already at the target size).

    python benchmarks/pack_for_device.py --out .devicedata --size 128
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

import cv2

from defectmine.data.builtin import SEGMENTATION_SPLITS, elpv_root, magnetic_tile_root, shared_dir
from defectmine.data.images import ImageSpec, prepare_image, prepare_mask, read_image, read_mask
from defectmine.progress import track


def _write_png(path: Path, pixels) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), pixels):
        raise OSError(f"{path}: could not write the image")


def pack(out: Path, size: int) -> None:
    if out.exists() and any(out.iterdir()):
        # files already there are skipped below, so a folder packed at another size would mix sizes
        raise SystemExit(f"{out}: not empty. Fix: remove it, or pass another --out.")
    spec = ImageSpec(size=(size, size), channels=1)
    shared = shared_dir()
    sources = {"magnetic_tile": magnetic_tile_root(), "elpv": elpv_root()}
    targets = {"magnetic_tile": out / "shared" / "datasets" / "magnetic-tile", "elpv": out / "elpv"}
    # The segmentation splits list the same Magnetic Tile files (each is written once).
    for name in SEGMENTATION_SPLITS:
        sources[name], targets[name] = sources["magnetic_tile"], targets["magnetic_tile"]
    (out / "shared" / "splits").mkdir(parents=True, exist_ok=True)
    for name in ("magnetic_tile", "elpv", *SEGMENTATION_SPLITS):
        with (shared / "splits" / f"{name}.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        for row in track(rows, f"packing {name}"):
            source = sources[name] / row["path"]
            # X.jpg -> X.jpg.png: Magnetic Tile's masks already own the name X.png.
            if not row["path"].endswith(".png"):
                row["path"] += ".png"
            target = targets[name] / row["path"]
            if not target.is_file():
                _write_png(target, prepare_image(read_image(source), spec)[0])
            if row.get("mask") and not (targets[name] / row["mask"]).is_file():
                mask = prepare_mask(read_mask(sources[name] / row["mask"]), spec)
                _write_png(targets[name] / row["mask"], mask.astype("uint8") * 255)
        with (out / "shared" / "splits" / f"{name}.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    shutil.copy(sources["elpv"] / "labels.csv", targets["elpv"] / "labels.csv")
    shutil.copy(shared / "splits" / "README.md", out / "shared" / "splits" / "README.md")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({total / 2**20:.1f} MiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(".devicedata"))
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    pack(args.out, args.size)


if __name__ == "__main__":
    main()
