"""The main path, above evaluation and report: fit a run, predict, evaluate a run, sweep.

    config = RunConfig(data="elpv", detector="fcdd", k=40)
    result = fit_run(config, Path("runs/elpv"))          # config.json, split.csv, model/, metrics, report
    evaluate_run(Path("runs/elpv"), threshold_rule="mean_std")
    predict_folder(Path("runs/elpv/model"), "new_images/", Path("preds"))

`evaluation/` computes and `report/` draws; only this package orchestrates. Benchmarks and the sweep
go through `fit_and_evaluate`, the one fit -> score -> evaluate path.
"""

from defectmine.pipeline.config import RunConfig, check_threshold_options
from defectmine.pipeline.data import (
    PreparedData,
    build_datasets,
    list_images,
    load_records,
    prepare_data,
    split_records,
    training_anomalies,
)
from defectmine.pipeline.predict import predict_folder
from defectmine.pipeline.run import RunResult, evaluate_run, fit_run, load_run_config
from defectmine.pipeline.runinfo import environment
from defectmine.pipeline.segment_predict import predict_segment_folder
from defectmine.pipeline.segment_run import SegmentConfig, evaluate_segment_run, fit_segment_run
from defectmine.pipeline.steps import (
    Outcome,
    create_detector,
    evaluate_scores,
    fit_and_evaluate,
    fit_detector,
    score_sets,
)
from defectmine.pipeline.sweep import merge_sweep_rows, run_sweep

__all__ = [
    "Outcome",
    "PreparedData",
    "RunConfig",
    "RunResult",
    "SegmentConfig",
    "build_datasets",
    "check_threshold_options",
    "create_detector",
    "environment",
    "evaluate_run",
    "evaluate_scores",
    "evaluate_segment_run",
    "fit_and_evaluate",
    "fit_detector",
    "fit_run",
    "fit_segment_run",
    "list_images",
    "load_records",
    "load_run_config",
    "merge_sweep_rows",
    "predict_folder",
    "predict_segment_folder",
    "prepare_data",
    "run_sweep",
    "score_sets",
    "split_records",
    "training_anomalies",
]
