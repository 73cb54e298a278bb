"""From `--data` to decoded datasets: records, the split, the training anomalies a run asks for."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from defectmine.data import (
    BUILTIN_SETS,
    ImageDataset,
    Record,
    Split,
    class_list,
    elpv,
    fixed_split,
    make_split,
    positive_ratio_subset,
    read_manifest,
    scan_folder,
    take_k,
)
from defectmine.errors import ConfigError, DataError
from defectmine.pipeline.config import RunConfig

#: How the split of a run was made (recorded in config.json as "split_source").
SPLIT_FROM_RECORDS, SPLIT_SEEDED = "records", "seeded"


def load_records(data: str) -> list[Record]:
    """Records from a built-in set name, a CSV manifest or a folder in the normal/anomalous layout."""
    if data in BUILTIN_SETS:
        return _builtin_records(data)
    path = Path(data)
    if path.suffix.lower() == ".csv":
        if not path.is_file():
            raise DataError(f"{path}: manifest not found.")
        return read_manifest(path)
    if not path.exists():
        raise DataError(
            f"{path}: no such folder or manifest. Pass a folder with normal/ and anomalous/<class>/ "
            f"subfolders, a CSV manifest, or a built-in set ({', '.join(BUILTIN_SETS)})."
        )
    return scan_folder(path)


def resolved_data(data: str) -> str:
    """`data` as it was really used: a built-in name as it is, a folder or CSV as an absolute path
    (a path relative to the working directory means nothing once the run folder is elsewhere)."""
    return data if data in BUILTIN_SETS else str(Path(data).expanduser().resolve())


def _builtin_records(name: str) -> list[Record]:
    """The fixed benchmark split; for ELPV, whose images ship with a PyPI package, the same protocol
    (seed 0, 80 reserved anomalies) when the split files of ../shared are not on this machine."""
    try:
        return fixed_split(name)
    except DataError as err:
        if name != "elpv":
            raise
        warnings.warn(f"{err} Using the ELPV benchmark protocol with seed 0 instead of the fixed split file.",
                      stacklevel=2)
        return make_split(elpv(), seed=0, n_train_anomalous=80).to_records()


def split_source(records: list[Record]) -> str:
    """SPLIT_FROM_RECORDS when every record carries its split, else SPLIT_SEEDED."""
    return SPLIT_FROM_RECORDS if records and all(r.split for r in records) else SPLIT_SEEDED


def split_records(records: list[Record], config: RunConfig) -> Split:
    """The records' own split when they carry one, else the seeded protocol split."""
    if split_source(records) == SPLIT_FROM_RECORDS:
        return Split.from_records(records)
    if any(r.split for r in records):
        missing = next(r for r in records if not r.split)
        raise DataError(f"{missing.path}: some records have a split and this one has none; give all or none.")
    n_anomalous = sum(r.is_anomalous for r in records)
    reserve = config.k if config.k is not None else min(80, n_anomalous // 3)
    seed = 0 if config.split_seed is None else config.split_seed
    return make_split(records, seed=seed, n_train_anomalous=reserve)


def training_anomalies(split: Split, config: RunConfig) -> list[Record]:
    """The labelled anomalies a run trains on: all of the pool, the first k, or a positive-ratio sample."""
    if config.ratio is not None:
        chosen = positive_ratio_subset(split.normal_train, split.train_anomalous, config.ratio, seed=config.seed)
        return [r for r in chosen if r.is_anomalous]
    if config.k is None:
        return list(split.train_anomalous)
    return list(take_k(split, config.k).train_anomalous)


def check_validation_records(split: Split, config: RunConfig, where: str) -> None:
    """Before decoding anything: the validation split exists and its classes can serve the threshold rule."""
    if not split.val:
        raise DataError(f"{where}: the split has no validation images; thresholds and model selection need them.")
    n_anomalous = sum(r.is_anomalous for r in split.val)
    if config.threshold_rule == "max_f1" and n_anomalous == 0:
        raise ConfigError(
            f"{where}: the validation split holds only normal images, so --threshold-rule max_f1 (which needs "
            "labelled defects) cannot be chosen there. Fix: use --threshold-rule mean_std (normal images only), "
            "or put some defective images in the validation split."
        )
    if config.threshold_rule == "mean_std" and n_anomalous == len(split.val):
        raise ConfigError(
            f"{where}: the validation split holds no normal images, so --threshold-rule mean_std cannot be "
            "chosen there. Fix: use --threshold-rule max_f1, or put normal images in the validation split."
        )


def data_root(records: list[Record]) -> Path:
    """The deepest folder holding every image and mask: run files store paths relative to it."""
    paths = [str(r.path) for r in records] + [str(r.mask) for r in records if r.mask is not None]
    if not paths:
        return Path.cwd()
    common = Path(os.path.commonpath([os.path.abspath(p) for p in paths]))
    return common if common.is_dir() or not common.exists() else common.parent


@dataclass
class PreparedData:
    """The decoded sets of one run."""

    split: Split
    normal: ImageDataset
    anomalous: ImageDataset | None
    val: ImageDataset
    test: ImageDataset


def prepare_data(config: RunConfig, records: list[Record] | None = None) -> PreparedData:
    """Records -> split -> the training anomalies the config asks for -> decoded datasets."""
    records = load_records(config.data) if records is None else records
    split = split_records(records, config)
    return build_datasets(split, training_anomalies(split, config), config)


def build_datasets(split: Split, anomalies: list[Record], config: RunConfig) -> PreparedData:
    """Decode the split's images once: normal training images, `anomalies`, val and test.

    Sweeps call this with the whole anomaly pool and take subsets of it per point.
    """
    spec, kwargs = config.spec, dataset_options(split, config)
    check_validation_records(split, config, config.data)
    return PreparedData(
        split=split,
        normal=ImageDataset(split.normal_train, spec, **kwargs),
        anomalous=ImageDataset(anomalies, spec, **kwargs) if anomalies else None,
        val=ImageDataset(split.val, spec, **kwargs),
        test=ImageDataset(split.test, spec, **kwargs) if split.test else ImageDataset(split.val[:0], spec, **kwargs),
    )


def dataset_options(split: Split, config: RunConfig) -> dict:
    """Keyword arguments of every ImageDataset of a run: one class list for all its sets, so that a
    class index means the same defect class in training, validation and test masks."""
    return {"skip_bad": config.skip_bad, "quiet": config.quiet, "classes": class_list(split.to_records())}


def skipped_files(data: PreparedData) -> list[dict]:
    """Every file the decoding skipped (skip_bad), as {"path", "reason"}."""
    sets = (data.normal, data.anomalous, data.val, data.test)
    return [{"path": str(path), "reason": reason} for ds in sets if ds is not None for path, reason in ds.skipped]


def list_images(folder: Path) -> list[Record]:
    """Records for a folder of images: the normal/anomalous layout when present (labels, classes,
    masks), else every image in it, listed as `predict` lists them (hidden files and __MACOSX left
    out, symlinked duplicates once), with the placeholder label 'normal' and meta {"unlabelled": True}.
    """
    from defectmine.pipeline.predict_inputs import list_inputs

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder of images.")
    if (folder / "normal").is_dir():
        return scan_folder(folder)
    return [Record(path=Path(item.path), label="normal", meta={"unlabelled": True})
            for item in list_inputs(folder).items]
