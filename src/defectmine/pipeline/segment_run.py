"""`segment fit` and `segment evaluate`: the detection run folder, for a segmenter.

Data, splits, run folders, integrity checks and errors are detection's (`pipeline.data`,
`pipeline.run_folder`); what differs is the model (a U-Net over class masks) and the metrics
(per-class IoU / Dice and the DLI paper's pooled IoU beside the image-level "any defect" metrics).
The training set is the split's `train` normals and `train_anomalous` images; model selection and
both thresholds (pixel: inside the segmenter; image: max F1 of the image score) use `val` only.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

from defectmine.core.results import ClassMaps
from defectmine.data import ImageDataset, Record, Split
from defectmine.data.blending import check_methods
from defectmine.data.injection import DEFAULT_METHODS
from defectmine.errors import ConfigError, DataError
from defectmine.evaluation.segmentation import segmentation_metrics
from defectmine.evaluation.split_metrics import evaluate_split
from defectmine.pipeline.config import RunConfig
from defectmine.pipeline.data import (
    SPLIT_FROM_RECORDS,
    check_validation_records,
    dataset_options,
    load_records,
    resolved_data,
    split_records,
    split_source,
)
from defectmine.pipeline.run import read_split
from defectmine.pipeline.run_folder import (
    METRICS_FILE,
    MODEL_DIR,
    REPORT_FILE,
    RUN_CONFIG,
    SCORES_FILE,
    check_out_folder,
    check_run_integrity,
    read_run_document,
    record_run,
    staged_folder,
    write_atomic,
)
from defectmine.pipeline.runinfo import environment
from defectmine.segment import Segmenter, create_segmenter, load_segmenter

#: config.json's "task" of a segment run (detection runs have none).
TASK = "segment"
#: How a pixel's defect probability becomes the image score: its most probable defect class.
IMAGE_SCORE = "max"
#: The image-level threshold rule (on val): "any defect predicted" needs labelled defects there.
IMAGE_RULE = "max_f1"


@dataclass
class SegmentConfig:
    """Everything that defines a segment run, checked at construction.

    data: a folder (normal/, anomalous/<class>/, masks/), a CSV manifest or a built-in set name.
    encoder, loss, epochs, seed, device: the U-Net's options of the same name; segmenter_params:
        its other options (`-p key=value`), which take precedence.
    injection: Dynamic Label Injection of the training defects into defect-free training images;
        keep_clean: the share of defect-free images it leaves as they are; blend: how a defect is
        pasted, each time one of these at random ("poisson" mixed-gradient, "poisson_normal", "cutpaste").
    split_seed: seed of the split made when the data carries none (None when the records carry one).
    """

    data: str
    encoder: str = "resnet18"
    loss: str = "bce_dice"
    epochs: int = 30
    image_size: int = 128
    channels: int = 1
    resize: str = "stretch"
    injection: bool = True
    keep_clean: float = 0.1
    blend: tuple[str, ...] = DEFAULT_METHODS
    segmenter_params: dict = field(default_factory=dict)
    seed: int = 0
    split_seed: int | None = 0
    device: str = "auto"
    report_images: int = 16
    skip_bad: bool = False
    quiet: bool = False

    def __post_init__(self):
        if not isinstance(self.segmenter_params, dict):
            raise ConfigError(f"segmenter_params must be a dict of U-Net options, got {self.segmenter_params!r}.")
        if isinstance(self.keep_clean, bool) or not isinstance(self.keep_clean, (int, float)) \
                or not 0 <= self.keep_clean <= 1:
            raise ConfigError(f"--keep-clean {self.keep_clean!r}: must be a share in [0, 1], e.g. 0.1.")
        self.blend = check_methods(self.blend, "--blend")  # before any image is decoded
        self.data_config()  # image size, channels and resize, checked as detection checks them

    def data_config(self) -> RunConfig:
        """The settings the shared data helpers read (split, decoding, validation classes)."""
        return RunConfig(data=self.data, image_size=self.image_size, channels=self.channels, resize=self.resize,
                         split_seed=self.split_seed, seed=self.seed, threshold_rule=IMAGE_RULE,
                         skip_bad=self.skip_bad, quiet=self.quiet)

    def segmenter_options(self) -> dict:
        return {"encoder": self.encoder, "loss": self.loss, "epochs": self.epochs, "seed": self.seed,
                "device": self.device, "quiet": self.quiet, **self.segmenter_params}


@dataclass
class SegmentRunResult:
    run_dir: Path
    metrics: dict
    segmenter: Segmenter


def create_run_segmenter(config: SegmentConfig) -> Segmenter:
    """A new U-Net as configured; its network is built and run on one blank image at the configured
    size, so that a size the encoder cannot take fails now, in one line."""
    segmenter = create_segmenter("unet", **config.segmenter_options())
    spec = config.data_config().spec
    try:
        with torch.no_grad():
            network = segmenter._build_network(spec, 1).eval()
            network(torch.zeros((1, spec.channels, *spec.size)))
    except (RuntimeError, ValueError) as err:
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(f"--image-size {config.image_size} does not fit encoder {config.encoder!r} "
                          f"({first_line}). Fix: use a multiple of 32, e.g. 128.") from None
    return segmenter


def _check_training_masks(train_anomalous: list[Record], where: str) -> None:
    """Before decoding: a segmenter learns its classes from training defects with masks."""
    if not any(r.mask is not None for r in train_anomalous):
        raise DataError(
            f"{where}: none of the {len(train_anomalous)} anomalous training image(s) has a mask, and a segmenter "
            "learns its classes from masks. Fix: add masks (masks/anomalous/<class>/<name> in a folder, a mask "
            "column in a manifest), or use `defectmine fit` for image-level detection."
        )


def injection_hook(config: SegmentConfig, train: ImageDataset):
    """The Dynamic Label Injection hook of the training defects (None without --injection)."""
    if not config.injection:
        return None
    from defectmine.data.injection import DynamicLabelInjection, defect_pool

    known = np.flatnonzero(train.mask_available)
    kept = train.subset(known)
    return DynamicLabelInjection(defect_pool(kept.raw_images(), kept.class_masks(), kept.classes),
                                 methods=config.blend, keep_clean=config.keep_clean)


def fit_segment_run(config: SegmentConfig, run_dir: Path, *, records: list[Record] | None = None,
                    overwrite: bool = False) -> SegmentRunResult:
    """Fit a U-Net on the training split's class masks and write a complete run folder.

    Options, the output folder, the validation split and the training masks are checked before any
    image is decoded; the folder is built under a temporary name and moved into place at the end.
    """
    run_dir = Path(run_dir)
    check_out_folder(run_dir, overwrite)
    segmenter = create_run_segmenter(config)
    data_config = config.data_config()
    records = load_records(config.data) if records is None else records
    split = split_records(records, data_config)
    check_validation_records(split, data_config, config.data)
    _check_training_masks(split.train_anomalous, config.data)
    source = split_source(records)
    config = replace(config, split_seed=None if source == SPLIT_FROM_RECORDS else config.split_seed)
    spec, kwargs = data_config.spec, dataset_options(split, data_config)
    train = ImageDataset(split.normal_train + split.train_anomalous, spec, **kwargs)
    val = ImageDataset(split.val, spec, **kwargs)
    test = ImageDataset(split.test, spec, **kwargs)
    hook = injection_hook(config, train)

    with staged_folder(run_dir) as stage:
        record = record_run(stage, split.to_records(), {**asdict(config), "data": resolved_data(config.data)})
        started = time.perf_counter()
        segmenter.fit(train, val=val, augment_batch=hook)
        fit_seconds = time.perf_counter() - started
        record.save_model(segmenter)
        document = record.write_document(
            task=TASK, split_source=source, segmenter={"name": segmenter.name, "config": segmenter.get_config()},
            spec=spec.to_dict())
        metrics, maps = score_and_evaluate(segmenter, val, test)
        metrics["timing"]["fit_seconds"] = fit_seconds
        metrics["training"] = {
            "n_normal": len(split.normal_train), "n_anomalous": len(split.train_anomalous),
            "best_epoch": segmenter.best_epoch_, "stopped_epoch": getattr(segmenter, "stopped_epoch_", None),
            "val_metric": segmenter.val_metric_,
            "injection": repr(hook) if hook is not None else None,
        }
        metrics["skipped_files"] = [{"path": str(p), "reason": r} for ds in (train, val, test) for p, r in ds.skipped]
        write_segment_outputs(stage, config, document, segmenter, metrics, (val, test), maps)
    return SegmentRunResult(run_dir, metrics, segmenter)


def evaluate_segment_run(run_dir: Path, *, data_root: Path | str | None = None,
                         quiet: bool | None = None) -> SegmentRunResult:
    """Re-score a segment run's val/test split with its saved model; rewrite metrics.json, scores.csv
    and report.html. The model, split and config must belong together (checked by fingerprint)."""
    run_dir = Path(run_dir)
    document = read_run_document(run_dir)
    if document.get("task") != TASK:
        raise DataError(f"{run_dir}: a detection run, not a segment run. Fix: use `defectmine evaluate {run_dir}`.")
    config = load_segment_config(run_dir, document)
    if quiet is not None:
        config = replace(config, quiet=quiet)
    check_run_integrity(run_dir, document)
    split = Split.from_records(read_split(run_dir, document, data_root))
    data_config = config.data_config()
    check_validation_records(split, data_config, str(run_dir))
    segmenter = load_segmenter(run_dir / MODEL_DIR)
    kwargs = dataset_options(split, data_config)
    val = ImageDataset(split.val, segmenter.spec_, **kwargs)
    test = ImageDataset(split.test, segmenter.spec_, **kwargs)
    previous = _read_json(run_dir / METRICS_FILE) if (run_dir / METRICS_FILE).is_file() else {}
    metrics, maps = score_and_evaluate(segmenter, val, test)
    metrics["timing"]["fit_seconds"] = previous.get("timing", {}).get("fit_seconds")
    for key in ("training", "skipped_files"):
        if key in previous:
            metrics[key] = previous[key]
    write_segment_outputs(run_dir, config, document, segmenter, metrics, (val, test), maps)
    return SegmentRunResult(run_dir, metrics, segmenter)


def load_segment_config(run_dir: Path, document: dict) -> SegmentConfig:
    """The SegmentConfig recorded in a run folder's config.json."""
    known = {f.name for f in fields(SegmentConfig)}
    try:
        return SegmentConfig(**{k: v for k, v in document["run"].items() if k in known})
    except TypeError as err:
        raise DataError(f"{Path(run_dir) / RUN_CONFIG}: incomplete run settings ({err}). "
                        "Fix: re-create the run with `defectmine segment fit`.") from None


def score_and_evaluate(segmenter: Segmenter, val: ImageDataset, test: ImageDataset) -> tuple[dict, tuple]:
    """Predict val and test; metrics: the image threshold (on val) and image metrics of the image score
    (`evaluate_split`, which adds binary pixel metrics), and per-class segmentation metrics at the
    segmenter's val-chosen pixel threshold. Returns (metrics, (val maps, test maps))."""
    started = time.perf_counter()
    val_maps = segmenter.predict(val)
    test_maps = segmenter.predict(test) if len(test) else None
    score_ms = 1000 * (time.perf_counter() - started) / max(len(val) + len(test), 1)
    val_scores = val_maps.anomaly_scores(IMAGE_SCORE)
    test_scores = test_maps.anomaly_scores(IMAGE_SCORE) if test_maps is not None else val_scores
    metrics = evaluate_split(val, val_scores, test, test_scores, rule=IMAGE_RULE)
    metrics["image_score"] = f"largest defect-class probability ({IMAGE_SCORE})"
    metrics["pixel_threshold"] = segmenter.threshold_
    segmentation = {}
    for part, dataset, maps in (("val", val, val_maps), ("test", test, test_maps)):
        if maps is None:
            continue
        known = dataset.mask_available
        predicted = maps.class_index(segmenter.threshold_, how=IMAGE_SCORE)
        segmentation[part] = segmentation_metrics(predicted, dataset.class_masks(), maps.classes, available=known)
        # anomalous images without a mask: their ground truth is unknown, so they are left out (and counted)
        segmentation[f"{part}_without_mask"] = int((~known).sum())
    metrics["segmentation"] = segmentation
    metrics["timing"] = {"score_ms_per_image": score_ms}
    return metrics, (val_maps, test_maps)


def write_segment_outputs(folder: Path, config: SegmentConfig, document: dict, segmenter: Segmenter, metrics: dict,
                          sets: tuple[ImageDataset, ImageDataset], maps: tuple[ClassMaps, ClassMaps | None]) -> None:
    """scores.csv, report.html and metrics.json of a segment run (each replaced in one step)."""
    from defectmine.report.files import write_scores_csv
    from defectmine.report.segment import segment_tiles, write_segment_report

    metrics["environment"] = environment()
    image_threshold = metrics["threshold"]["value"]
    rows, shown = [], None
    for dataset, class_maps in zip(sets, maps):
        if class_maps is None:
            continue
        predicted = class_maps.class_index(segmenter.threshold_, how=IMAGE_SCORE)
        scores = class_maps.anomaly_scores(IMAGE_SCORE).image
        for record, labels, score in zip(dataset.records, predicted, scores):
            rows.append(image_row(record, labels, float(score), image_threshold, class_maps.classes))
        shown = (dataset, predicted, scores)
    write_atomic(folder / SCORES_FILE, lambda p: write_scores_csv(p, rows))
    dataset, predicted, scores = shown  # the test set when there is one, else val
    part = dataset.records[0].split if len(dataset) else "val"
    title = f"defectmine segment - {segmenter.name} ({config.encoder}) on {config.data} ({part} set)"
    tiles = segment_tiles(dataset, predicted, scores, config.report_images)
    write_atomic(folder / REPORT_FILE, lambda p: write_segment_report(
        p, title=title, document=document, metrics=metrics, classes=segmenter.classes_, tiles=tiles))
    write_atomic(folder / METRICS_FILE, lambda p: _write_json(p, metrics))


def image_row(record: Record | None, labels: np.ndarray, score: float, threshold: float | None,
              classes: tuple[str, ...], path: str | None = None) -> dict:
    """One scores.csv row: path (and split, label, class when known), the classes present, the defect
    area in pixels and percent per class, the image score and the decision at `threshold`."""
    from defectmine.report.segment import class_areas

    areas = class_areas(labels, classes)
    row = {"path": path if path is not None else str(record.path)}
    if record is not None and path is None:
        row.update(split=record.split, label=record.label, defect_class=record.defect_class)
    row["classes_present"] = ";".join(name for name, (pixels, _) in areas.items() if pixels)
    row["defect_pixels"] = int(sum(pixels for pixels, _ in areas.values()))
    for name, (pixels, percent) in areas.items():
        row[f"area_px_{name}"] = pixels
        row[f"area_pct_{name}"] = round(percent, 4)
    row["score"] = score
    if threshold is not None:
        row["predicted"] = "anomalous" if score >= threshold else "normal"
    return row


def _write_json(path: Path, obj) -> None:
    from defectmine.report.files import write_json

    write_json(path, obj)


def _read_json(path: Path):
    from defectmine.report.files import read_json

    return read_json(path)
