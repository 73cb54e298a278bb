"""`fit` and `evaluate` of one run: the run directory holds config.json, split.csv, model/, scores.csv,
metrics.json and report.html, and any run can be re-evaluated or re-reported from it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from defectmine.data import ImageDataset, Record, Split, read_manifest
from defectmine.errors import ConfigError, DataError
from defectmine.models.base import Detector
from defectmine.models.registry import load_detector
from defectmine.models.trained import HEATMAPS
from defectmine.pipeline.config import RunConfig, check_threshold_options
from defectmine.pipeline.data import (
    SPLIT_FROM_RECORDS,
    build_datasets,
    check_validation_records,
    dataset_options,
    load_records,
    resolved_data,
    skipped_files,
    split_records,
    split_source,
    training_anomalies,
)
from defectmine.pipeline.run_folder import (
    METRICS_FILE,
    MODEL_DIR,
    REPORT_FILE,
    RUN_CONFIG,
    SCORES_FILE,
    SPLIT_FILE,
    check_out_folder,
    check_run_integrity,
    read_run_document,
    record_run,
    staged_folder,
    write_atomic,
)
from defectmine.pipeline.runinfo import environment
from defectmine.pipeline.steps import check_input_size, create_detector, fit_and_evaluate, score_sets, evaluate_scores


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict
    detector: Detector


def fit_run(config: RunConfig, run_dir: Path, *, records: list[Record] | None = None,
            overwrite: bool = False) -> RunResult:
    """Fit a detector as configured and write a complete run directory.

    Everything that can be checked without training is checked first (output folder, options,
    detector parameters, image size against the backbone, validation classes against the threshold
    rule). The folder is built under a temporary name and moved into place at the end.
    """
    run_dir = Path(run_dir)
    check_out_folder(run_dir, overwrite)
    detector = create_detector(config)
    check_input_size(detector, config)
    records = load_records(config.data) if records is None else records
    split = split_records(records, config)
    source = split_source(records)
    config = replace(config, split_seed=None if source == SPLIT_FROM_RECORDS else config.split_seed)
    data = build_datasets(split, training_anomalies(split, config), config)

    with staged_folder(run_dir) as stage:
        record = record_run(stage, data.split.to_records(), {**asdict(config), "data": resolved_data(config.data)})
        outcome = fit_and_evaluate(config, data, detector)
        record.save_model(detector)
        document = record.write_document(
            split_source=source, detector={"name": detector.name, "config": detector.get_config()},
            spec=config.spec.to_dict())
        metrics = outcome.metrics
        metrics["skipped_files"] = skipped_files(data)
        _write_outputs(stage, config, document, detector, metrics, data.val, outcome.val_scores, data.test,
                       outcome.test_scores)
    return RunResult(run_dir, metrics, detector)


def evaluate_run(run_dir: Path, *, threshold_rule: str | None = None, threshold_k: float | None = None,
                 threshold_value: float | None = None, quiet: bool | None = None,
                 data_root: Path | str | None = None, heatmap: str = "native") -> RunResult:
    """Re-score a run's val/test split with its saved model and rewrite metrics.json and report.html.

    The model, split and config must belong together (checked by fingerprint). `data_root` re-points
    the images when the data moved (split.csv paths are relative to the run's recorded data root).
    `heatmap="gradcam"` draws (and scores pixels with) Grad-CAM maps of the image score instead of the
    detector's own maps.
    """
    run_dir = Path(run_dir)
    document = read_run_document(run_dir)
    if document.get("task") == "segment":
        raise ConfigError(f"{run_dir}: a segmentation run. Fix: re-evaluate it with `defectmine segment evaluate {run_dir}`.")
    config = load_run_config(run_dir, document)
    overrides = {"threshold_rule": threshold_rule, "threshold_k": threshold_k,
                 "threshold_value": threshold_value, "quiet": quiet}
    config = replace(config, **{key: value for key, value in overrides.items() if value is not None})
    check_threshold_options(config.threshold_rule, config.threshold_k, config.threshold_value)
    if heatmap not in HEATMAPS:
        raise ConfigError(f"--heatmap {heatmap!r}: heatmap={heatmap!r} is unknown. Fix: use one of {', '.join(HEATMAPS)}.")
    check_run_integrity(run_dir, document)
    split = Split.from_records(read_split(run_dir, document, data_root))
    check_validation_records(split, config, str(run_dir))
    detector = load_detector(run_dir / MODEL_DIR)
    kwargs = dataset_options(split, config)
    val = ImageDataset(split.val, detector.spec_, **kwargs)
    test = ImageDataset(split.test, detector.spec_, **kwargs)
    previous = _read_json(run_dir / METRICS_FILE) if (run_dir / METRICS_FILE).is_file() else {}
    val_scores, test_scores, score_ms = score_sets(detector, val, test, heatmap)
    metrics = evaluate_scores(config, val, val_scores, test, test_scores)
    metrics["heatmap"] = heatmap
    metrics["timing"] = {"fit_seconds": previous.get("timing", {}).get("fit_seconds"), "score_ms_per_image": score_ms}
    for key in ("training", "skipped_files"):
        if key in previous:
            metrics[key] = previous[key]
    _write_outputs(run_dir, config, document, detector, metrics, val, val_scores, test, test_scores)
    return RunResult(run_dir, metrics, detector)


def read_split(run_dir: Path, document: dict, data_root: Path | str | None = None) -> list[Record]:
    """The run's split.csv, its paths resolved against `data_root` (default: the recorded one)."""
    recorded = document.get("data_root")
    root = Path(data_root).expanduser().resolve() if data_root is not None else (Path(recorded) if recorded else None)
    try:
        return read_manifest(Path(run_dir) / SPLIT_FILE, root=root)
    except DataError as err:
        hint = "" if data_root is not None else (
            f" The run reads its images below {recorded}; if the data moved, pass --data-root NEW_FOLDER.")
        raise DataError(f"{err}{hint}") from None


def load_run_config(run_dir: Path, document: dict | None = None) -> RunConfig:
    """The RunConfig recorded in a run folder's config.json."""
    document = read_run_document(run_dir) if document is None else document
    known = {f.name for f in fields(RunConfig)}
    settings = {k: v for k, v in document["run"].items() if k in known}
    try:
        return RunConfig(**settings)
    except TypeError as err:
        raise DataError(f"{Path(run_dir) / RUN_CONFIG}: incomplete run settings ({err}). "
                        "Fix: re-create the run with `defectmine fit`.") from None


def _write_outputs(folder: Path, config: RunConfig, document: dict, detector: Detector, metrics: dict,
                   val: ImageDataset, val_scores, test: ImageDataset, test_scores) -> None:
    """scores.csv, report.html and metrics.json of a run (each replaced in one step)."""
    from defectmine.report.run import write_run_report, write_run_scores

    metrics["environment"] = environment()
    metrics["display_range"] = validation_map_range(val_scores)
    parts = [(val, val_scores), (test, test_scores)]
    write_atomic(folder / SCORES_FILE, lambda p: write_run_scores(p, parts, metrics["threshold"]["value"]))
    report_set, report_scores = (test, test_scores) if len(test) else (val, val_scores)
    part = "test" if metrics.get("test") else "val"
    title = f"defectmine - {detector.name} on {config.data} ({part} set)"
    write_atomic(folder / REPORT_FILE, lambda p: write_run_report(
        p, title=title, document=document, metrics=metrics, dataset=report_set, scores=report_scores,
        display_quantile=config.display_quantile, n_images=config.report_images))
    write_atomic(folder / METRICS_FILE, lambda p: _write_json(p, metrics))


def validation_map_range(val_scores) -> dict | None:
    """Minimum and maximum of the validation maps, for `predict`: it scores a stream and cannot see all
    maps before drawing the first overlay, so it draws every overlay on [map_min, q * map_max] (the rule
    `display_range` applies to a whole set) and overlays stay comparable across images and calls.
    None for a detector without maps."""
    from defectmine.explain import display_range

    if val_scores.maps is None or not len(val_scores.maps):
        return None
    try:
        lo, hi = display_range(val_scores.maps, 1.0)
    except ConfigError:  # no finite value: predict falls back to its first batch
        return None
    return {"map_min": lo, "map_max": hi, "from": "val maps", "n_images": len(val_scores.maps)}


def _write_json(path: Path, obj) -> None:
    from defectmine.report.files import write_json

    write_json(path, obj)


def _read_json(path: Path):
    from defectmine.report.files import read_json

    return read_json(path)
