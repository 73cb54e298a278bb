"""The product's main path as plain functions: data -> split -> fit -> score -> threshold -> metrics -> report.

The CLI, the demo and the benchmarks call these; a run directory holds everything needed to re-evaluate
or re-report a run: config.json, split.csv, model/, scores.csv, metrics.json, report.html.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from defectmine import __version__
from defectmine.data import (
    BUILTIN_SETS,
    ImageDataset,
    ImageSpec,
    Record,
    Split,
    elpv,
    fixed_split,
    make_split,
    positive_ratio_subset,
    read_manifest,
    scan_folder,
    take_k,
    write_manifest,
)
from defectmine.data.images import IMAGE_SUFFIXES
from defectmine.errors import ConfigError, DataError
from defectmine.evaluation import choose_threshold, image_metrics, pixel_metrics
from defectmine.evaluation.pixel import pixel_threshold_max_dice
from defectmine.models.base import Detector, Scores
from defectmine.models.registry import create, load_detector

RUN_CONFIG = "config.json"
SPLIT_FILE = "split.csv"
MODEL_DIR = "model"
METRICS_FILE = "metrics.json"
SCORES_FILE = "scores.csv"
REPORT_FILE = "report.html"


@dataclass
class RunConfig:
    """Everything that defines a run. `data` is a folder, a CSV manifest or a built-in set name.

    k: use the first k labelled anomalies of the training pool (None: all of them; 0: none).
    ratio: instead of k, the deeper-FCDD positive ratio ("1/16", "unsupervised", ...).
    """

    data: str
    detector: str = "fcdd"
    detector_params: dict = field(default_factory=dict)
    k: int | None = None
    ratio: str | None = None
    image_size: int = 128
    channels: int = 1
    resize: str = "stretch"
    split_seed: int = 0
    seed: int = 0
    threshold_rule: str = "max_f1"
    threshold_k: float = 3.0
    threshold_value: float | None = None
    display_quantile: float = 0.25
    report_images: int = 16
    skip_bad: bool = False
    quiet: bool = False

    def __post_init__(self):
        if self.k is not None and self.ratio is not None:
            raise ConfigError("give either k (labelled anomalies) or ratio (positive ratio), not both.")
        if self.k is not None and self.k < 0:
            raise ConfigError(f"k={self.k}: the number of labelled anomalies cannot be negative.")

    @property
    def spec(self) -> ImageSpec:
        return ImageSpec(size=(self.image_size, self.image_size), channels=self.channels, resize=self.resize)


# -- data --------------------------------------------------------------------------------------
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


def _builtin_records(name: str) -> list[Record]:
    """The fixed benchmark split; for ELPV, whose images ship with a PyPI package, the same protocol
    (seed 0, 80 reserved anomalies) when the split files of ../shared are not on this machine."""
    try:
        return fixed_split(name)
    except DataError as err:
        if name != "elpv":
            raise
        import warnings

        warnings.warn(f"{err} Using the ELPV benchmark protocol with seed 0 instead of the fixed split file.",
                      stacklevel=2)
        return make_split(elpv(), seed=0, n_train_anomalous=80).to_records()


def split_records(records: list[Record], config: RunConfig) -> Split:
    """The records' own split when they carry one, else the seeded protocol split."""
    if records and all(r.split for r in records):
        return Split.from_records(records)
    if any(r.split for r in records):
        missing = next(r for r in records if not r.split)
        raise DataError(f"{missing.path}: some records have a split and this one has none; give all or none.")
    n_anomalous = sum(r.is_anomalous for r in records)
    reserve = config.k if config.k is not None else min(80, n_anomalous // 3)
    return make_split(records, seed=config.split_seed, n_train_anomalous=reserve)


def training_anomalies(split: Split, config: RunConfig) -> list[Record]:
    if config.ratio is not None:
        chosen = positive_ratio_subset(split.normal_train, split.train_anomalous, config.ratio, seed=config.seed)
        return [r for r in chosen if r.is_anomalous]
    if config.k is None:
        return list(split.train_anomalous)
    return list(take_k(split, config.k).train_anomalous)


@dataclass
class PreparedData:
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
    spec, kwargs = config.spec, {"skip_bad": config.skip_bad, "quiet": config.quiet}
    if not split.val:
        raise DataError(f"{config.data}: the split has no validation images; thresholds need them.")
    return PreparedData(
        split=split,
        normal=ImageDataset(split.normal_train, spec, **kwargs),
        anomalous=ImageDataset(anomalies, spec, **kwargs) if anomalies else None,
        val=ImageDataset(split.val, spec, **kwargs),
        test=ImageDataset(split.test, spec, **kwargs) if split.test else ImageDataset(split.val[:0], spec, **kwargs),
    )


# -- evaluation --------------------------------------------------------------------------------
def evaluate_scores(config: RunConfig, val: ImageDataset, val_scores: Scores, test: ImageDataset, test_scores: Scores) -> dict:
    """Threshold from validation only, metrics on test (image, and pixel where masks exist)."""
    params = {"k": config.threshold_k} if config.threshold_rule == "mean_std" else {}
    if config.threshold_rule == "fixed":
        if config.threshold_value is None:
            raise ConfigError("threshold rule 'fixed' needs --threshold-value.")
        params = {"value": config.threshold_value}
    threshold = choose_threshold(config.threshold_rule, val.labels, val_scores.image, **params)
    result = {
        "threshold": threshold.to_dict(),
        "val": image_metrics(val.labels, val_scores.image, threshold.value),
        "test": image_metrics(test.labels, test_scores.image, threshold.value) if len(test) else None,
    }
    if len(test) and test.has_masks and test_scores.maps is not None:
        pixel_threshold = None
        if val.has_masks and val_scores.maps is not None:
            pixel_threshold = pixel_threshold_max_dice(val.masks(), val_scores.maps)
        result["test_pixel"] = pixel_metrics(test.masks(), test_scores.maps, pixel_threshold)
    return result


def environment() -> dict:
    """Versions and machine facts recorded in every run."""
    import timm
    import torch
    import torchvision

    return {
        "defectmine": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


# -- runs --------------------------------------------------------------------------------------
def create_detector(config: RunConfig) -> Detector:
    """A new, unfitted detector of the configured registry name, seed and parameters."""
    params = {"seed": config.seed, "quiet": config.quiet, **config.detector_params}
    return create(config.detector, **params)


def fit_detector(detector: Detector, data: PreparedData) -> float:
    """Fit on the prepared normal (and anomalous) images, selecting on val; returns the seconds taken."""
    started = time.perf_counter()
    detector.fit(data.normal, data.anomalous, val=data.val)
    return time.perf_counter() - started


def score_sets(detector: Detector, val: ImageDataset, test: ImageDataset) -> tuple[Scores, Scores, float]:
    """Scores of the val and test images, and the scoring time in milliseconds per image."""
    started = time.perf_counter()
    val_scores = detector.score(val)
    test_scores = detector.score(test) if len(test) else Scores(np.zeros(0))
    score_ms = 1000 * (time.perf_counter() - started) / max(len(val) + len(test), 1)
    return val_scores, test_scores, score_ms


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict
    detector: Detector


def fit_run(config: RunConfig, run_dir: Path, *, records: list[Record] | None = None) -> RunResult:
    """Fit a detector as configured and write a complete run directory."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    data = prepare_data(config, records)
    detector = create_detector(config)
    (run_dir / RUN_CONFIG).write_text(json.dumps(_run_document(config, detector), indent=2))
    write_manifest(data.split.to_records(), run_dir / SPLIT_FILE, root=None)

    fit_seconds = fit_detector(detector, data)
    detector.save(run_dir / MODEL_DIR)
    metrics = score_and_report(config, detector, data.val, data.test, run_dir)
    metrics["timing"]["fit_seconds"] = fit_seconds
    metrics["training"] = {
        "n_normal": len(data.normal),
        "n_anomalous": 0 if data.anomalous is None else len(data.anomalous),
        "best_epoch": getattr(detector, "best_epoch_", None),
        "synthetic": getattr(detector, "synthetic_", None),
    }
    skipped = [ds.skipped for ds in (data.normal, data.anomalous, data.val, data.test) if ds is not None]
    metrics["skipped_files"] = [{"path": str(path), "reason": reason} for part in skipped for path, reason in part]
    _write_json(run_dir / METRICS_FILE, metrics)
    return RunResult(run_dir, metrics, detector)


def evaluate_run(run_dir: Path, *, threshold_rule: str | None = None, threshold_k: float | None = None,
                 threshold_value: float | None = None, quiet: bool | None = None) -> RunResult:
    """Re-score a run's val/test split with its saved model and rewrite metrics.json and report.html."""
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    overrides = {"threshold_rule": threshold_rule, "threshold_k": threshold_k,
                 "threshold_value": threshold_value, "quiet": quiet}
    for key, value in overrides.items():
        if value is not None:
            setattr(config, key, value)
    split = Split.from_records(read_manifest(run_dir / SPLIT_FILE))
    detector = load_detector(run_dir / MODEL_DIR)
    kwargs = {"skip_bad": config.skip_bad, "quiet": config.quiet}
    val = ImageDataset(split.val, detector.spec_, **kwargs)
    test = ImageDataset(split.test, detector.spec_, **kwargs)
    previous = _read_json(run_dir / METRICS_FILE) if (run_dir / METRICS_FILE).is_file() else {}
    metrics = score_and_report(config, detector, val, test, run_dir)
    for key in ("training", "skipped_files"):
        if key in previous:
            metrics[key] = previous[key]
    metrics["timing"]["fit_seconds"] = previous.get("timing", {}).get("fit_seconds")
    _write_json(run_dir / METRICS_FILE, metrics)
    return RunResult(run_dir, metrics, detector)


def score_and_report(config: RunConfig, detector: Detector, val: ImageDataset, test: ImageDataset, run_dir: Path) -> dict:
    val_scores, test_scores, score_ms = score_sets(detector, val, test)
    metrics = evaluate_scores(config, val, val_scores, test, test_scores)
    metrics["timing"] = {"score_ms_per_image": score_ms}
    metrics["environment"] = environment()
    report_set, report_scores = (test, test_scores) if len(test) else (val, val_scores)
    _write_scores_csv(run_dir / SCORES_FILE, [(val, val_scores), (test, test_scores)], metrics["threshold"]["value"])
    _write_run_report(run_dir, config, detector, metrics, report_set, report_scores)
    _write_json(run_dir / METRICS_FILE, metrics)
    return metrics


def load_run_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / RUN_CONFIG
    if not path.is_file():
        raise DataError(f"{run_dir}: not a run directory ({RUN_CONFIG} missing); create one with `defectmine fit`.")
    return RunConfig(**json.loads(path.read_text())["run"])


def _run_document(config: RunConfig, detector: Detector) -> dict:
    return {
        "run": asdict(config),
        "detector": {"name": detector.name, "config": detector.get_config()},
        "spec": config.spec.to_dict(),
        "environment": environment(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# -- prediction ------------------------------------------------------------------------------
def list_images(folder: Path) -> list[Record]:
    """Records for a folder to score: the normal/anomalous layout when present, else every image in it.

    Unlabelled images get the placeholder label 'normal' with meta {"unlabelled": True}.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder of images.")
    if (folder / "normal").is_dir():
        return scan_folder(folder)
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DataError(f"{folder}: no images found (looked for {', '.join(IMAGE_SUFFIXES)}).")
    return [Record(path=p.resolve(), label="normal", meta={"unlabelled": True}) for p in paths]


def predict_folder(model_dir: Path, data: str, out_dir: Path, *, threshold: float | None = None,
                   display_quantile: float = 0.25, overlays: bool = True, skip_bad: bool = False,
                   quiet: bool = False) -> Path:
    """Score a folder (or manifest) with a saved model: scores.csv plus full-resolution heatmap overlays."""
    from defectmine.data.images import read_image
    from defectmine.explain import display_range, overlay
    from defectmine.report.files import save_png

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    detector = load_detector(model_dir)
    if threshold is None:
        metrics_path = model_dir.parent / METRICS_FILE
        if metrics_path.is_file():
            threshold = _read_json(metrics_path)["threshold"]["value"]
    path = Path(data)
    records = read_manifest(path) if path.suffix.lower() == ".csv" else list_images(path)
    dataset = ImageDataset(records, detector.spec_, skip_bad=skip_bad, quiet=quiet)
    scores = detector.score(dataset)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    lo, hi = display_range(scores.maps, display_quantile) if scores.maps is not None else (0.0, 1.0)
    for index, record in enumerate(dataset.records):
        row = {"path": str(record.path), "score": float(scores.image[index])}
        if threshold is not None:
            row["predicted"] = "anomalous" if scores.image[index] >= threshold else "normal"
        if overlays and scores.maps is not None:
            original = read_image(record.path)  # full resolution: the heatmap is resized to it
            name = f"{index:05d}_{record.path.stem}.png"
            save_png(out_dir / "overlays" / name, overlay(original, scores.maps[index], lo, hi))
            row["overlay"] = f"overlays/{name}"
        rows.append(row)
    from defectmine.report.files import write_scores_csv

    write_scores_csv(out_dir / SCORES_FILE, rows)
    return out_dir / SCORES_FILE


# -- files -------------------------------------------------------------------------------------
def _write_json(path: Path, obj) -> None:
    from defectmine.report.files import write_json

    write_json(path, obj)


def _read_json(path: Path):
    from defectmine.report.files import read_json

    return read_json(path)


def _write_scores_csv(path: Path, parts, threshold: float) -> None:
    from defectmine.report.files import write_scores_csv

    rows = []
    for dataset, scores in parts:
        for record, score in zip(dataset.records, scores.image):
            rows.append({
                "path": str(record.path), "split": record.split, "label": record.label,
                "defect_class": record.defect_class, "score": float(score),
                "predicted": "anomalous" if score >= threshold else "normal",
            })
    write_scores_csv(path, rows)


def _write_run_report(run_dir: Path, config: RunConfig, detector: Detector, metrics: dict,
                      dataset: ImageDataset, scores: Scores) -> Path:
    from defectmine.explain import display_range, overlay
    from defectmine.report.html import ReportImage, write_report

    groups = [r.defect_class or r.label if r.is_anomalous else "normal" for r in dataset.records]
    top = np.argsort(-scores.image)[: config.report_images]
    images = []
    if scores.maps is not None and len(top):
        lo, hi = display_range(scores.maps, config.display_quantile)
        raw = dataset.raw_images()
        for index in top:
            record = dataset.records[index]
            images.append(ReportImage(
                name=record.path.name, overlay=overlay(raw[index].numpy(), scores.maps[index], lo, hi),
                score=float(scores.image[index]), label=record.label, group=groups[index],
            ))
    document = json.loads((run_dir / RUN_CONFIG).read_text())
    part = "test" if metrics.get("test") else "val"
    return write_report(
        run_dir / REPORT_FILE,
        title=f"defectmine - {detector.name} on {config.data} ({part} set)",
        metrics=metrics[part], threshold=metrics["threshold"], labels=dataset.labels, scores=scores.image,
        groups=groups, top_images=images, config=document, pixel_metrics=metrics.get("test_pixel"),
    )
