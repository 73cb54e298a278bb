"""The built-in benchmark sets (Magnetic Tile, ELPV) and their committed fixed splits."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from defectmine.errors import ConfigError, DataError
from defectmine.data.manifest import read_manifest
from defectmine.data.records import ANOMALOUS, NORMAL, Record

SHARED_ENV = "DEFECTMINE_SHARED"
ELPV_ENV = "DEFECTMINE_ELPV"
MAGNETIC_TILE_FREE = "Free"


def _is_shared(path: Path) -> bool:
    return (path / "splits").is_dir()


def shared_dir() -> Path:
    """The shared data folder (datasets/, splits/): $DEFECTMINE_SHARED, else a folder named `shared`
    beside the current directory, this package, or any of their parents."""
    env = os.environ.get(SHARED_ENV)
    if env:
        path = Path(env).expanduser()
        if not _is_shared(path):
            raise DataError(
                f"{SHARED_ENV}={env}: no splits/ folder there. Fix: point {SHARED_ENV} at the shared data "
                "folder that holds splits/ and datasets/, or unset it."
            )
        return path.resolve()
    starts = [Path.cwd().resolve(), Path(__file__).resolve().parent]
    for start in starts:
        for folder in (start, *start.parents):
            candidate = folder / "shared"
            if _is_shared(candidate):
                return candidate.resolve()  # one spelling of every path, even through symlinks
    raise DataError(
        "shared data folder not found (looked for a folder named 'shared' with splits/ inside, beside "
        f"{' and '.join(str(s) for s in starts)} and their parents). Fix: set {SHARED_ENV}=/path/to/shared."
    )


def magnetic_tile_root() -> Path:
    """shared/datasets/magnetic-tile (MT_<Class>/Imgs/*.jpg with same-named .png masks)."""
    root = shared_dir() / "datasets" / "magnetic-tile"
    if not root.is_dir():
        raise DataError(
            f"{root}: Magnetic Tile dataset not found. Fix: put the published MT_<Class>/Imgs folders there, "
            f"or set {SHARED_ENV} to a shared folder that has them."
        )
    return root


def elpv_root() -> Path:
    """The ELPV folder (labels.csv + images/): $DEFECTMINE_ELPV, else the `data/` folder of the installed
    `elpv-dataset` package. The variable serves machines without the package (e.g. a copy on a GPU box)."""
    env = os.environ.get(ELPV_ENV)
    if env:
        root = Path(env).expanduser().resolve()
        if not (root / "labels.csv").is_file():
            raise DataError(
                f"{ELPV_ENV}={env}: no labels.csv there. Fix: point {ELPV_ENV} at a folder with the ELPV "
                "labels.csv and images/, or unset it to use the elpv-dataset package."
            )
        return root
    spec = importlib.util.find_spec("elpv_dataset")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("package elpv-dataset is not installed. Fix: pip install elpv-dataset")
    root = (Path(next(iter(spec.submodule_search_locations))) / "data").resolve()
    if not (root / "labels.csv").is_file():
        raise DataError(
            f"{root}: labels.csv not found in the elpv-dataset package. Fix: reinstall it "
            "(pip install --force-reinstall elpv-dataset)."
        )
    return root


def magnetic_tile(root: Path | str | None = None) -> list[Record]:
    """All 1344 Magnetic Tile images: MT_Free → normal, the five defect classes → anomalous.

    defect_class is the lower-cased class (blowhole, break, crack, fray, uneven); every image keeps its
    same-named .png mask (empty for MT_Free), as in the fixed split. Sorted by class folder and name.
    """
    root = Path(root).expanduser().resolve() if root is not None else magnetic_tile_root()
    class_dirs = sorted(p for p in root.glob("MT_*") if p.is_dir())
    if not class_dirs:
        raise DataError(f"{root}: no MT_<Class> folders. Fix: pass the folder of the published Magnetic Tile layout.")
    records = []
    for class_dir in class_dirs:
        name = class_dir.name.removeprefix("MT_")
        normal = name == MAGNETIC_TILE_FREE
        for image in sorted((class_dir / "Imgs").glob("*.jpg")):
            mask = image.with_suffix(".png")
            records.append(
                Record(
                    path=image,
                    label=NORMAL if normal else ANOMALOUS,
                    defect_class="" if normal else name.lower(),
                    mask=mask if mask.is_file() else None,
                )
            )
    return records


def elpv_class(probability: float, cell_type: str) -> str:
    """ELPV defect class as in the fixed split: p<k>of3_<cell type>, e.g. p2of3_poly; "" for normal."""
    k = round(probability * 3)
    return f"p{k}of3_{cell_type}" if k else ""


def _elpv_labels(root: Path) -> dict[str, tuple[float, str]]:
    labels_csv = root / "labels.csv"
    table = {}
    # labels.csv is whitespace-separated: path probability type
    for line_no, line in enumerate(labels_csv.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rel, prob, cell_type = line.split()
            table[rel] = (float(prob), cell_type)
        except ValueError:
            raise DataError(
                f"{labels_csv}, line {line_no}: expected 'path probability type', got {line!r}. "
                "Fix: reinstall elpv-dataset."
            ) from None
    return table


def elpv(root: Path | str | None = None) -> list[Record]:
    """All 2624 ELPV solar-cell images; normal means defect probability 0.

    defect_class is p<k>of3_<mono|poly> for anomalous cells (as in the fixed split), meta holds
    {"probability": float, "cell_type": str}. In labels.csv order.
    """
    root = Path(root).expanduser().resolve() if root is not None else elpv_root()
    records = []
    for rel, (prob, cell_type) in _elpv_labels(root).items():
        records.append(
            Record(
                path=root / rel,
                label=ANOMALOUS if prob > 0 else NORMAL,
                defect_class=elpv_class(prob, cell_type),
                meta={"probability": prob, "cell_type": cell_type},
            )
        )
    return records


#: The Dynamic Label Injection protocol's Magnetic Tile splits (one per seed; shared/splits/README.md).
SEGMENTATION_SPLITS = tuple(f"magnetic_tile_seg_s{seed}" for seed in range(5))
BUILTIN_SETS: dict[str, Callable[..., list[Record]]] = {
    "magnetic_tile": magnetic_tile, "elpv": elpv, **dict.fromkeys(SEGMENTATION_SPLITS, magnetic_tile)}
_ROOTS: dict[str, Callable[[], Path]] = {
    "magnetic_tile": magnetic_tile_root, "elpv": elpv_root, **dict.fromkeys(SEGMENTATION_SPLITS, magnetic_tile_root)}


def fixed_split(name: str) -> list[Record]:
    """The committed benchmark split shared/splits/<name>.csv, rows in file order, each with its split.

    ELPV records also carry meta probability and cell_type.
    """
    if name not in BUILTIN_SETS:
        raise ConfigError(f"unknown built-in set {name!r}. Fix: use one of {', '.join(BUILTIN_SETS)}.")
    csv_path = shared_dir() / "splits" / f"{name}.csv"
    root = _ROOTS[name]()
    records = read_manifest(csv_path, root=root)
    if name == "elpv":
        labels = _elpv_labels(root)
        records = [_with_elpv_meta(r, root, labels) for r in records]
    return records


def _with_elpv_meta(record: Record, root: Path, labels: dict[str, tuple[float, str]]) -> Record:
    key = record.path.relative_to(root).as_posix()
    if key not in labels:
        raise DataError(f"{record.path}: not listed in {root / 'labels.csv'}. Fix: reinstall elpv-dataset.")
    prob, cell_type = labels[key]
    return replace(record, meta={**record.meta, "probability": prob, "cell_type": cell_type})
