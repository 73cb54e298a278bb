"""The main path, above evaluation and report: fit a run, predict, evaluate a run, sweep.

    config = RunConfig(data="elpv", detector="fcdd", k=40)
    result = fit_run(config, Path("runs/elpv"))          # config.json, split.csv, model/, metrics, report
    evaluate_run(Path("runs/elpv"), threshold_rule="mean_std")
    predict_folder(Path("runs/elpv/model"), "new_images/", Path("preds"))

`evaluation/` computes and `report/` draws; only this package orchestrates. Benchmarks and the sweep
go through `fit_and_evaluate`, the one fit -> score -> evaluate path.

Names are imported on first use (`defectmine._lazy`): `predict_folder` with an exported model
(model.onnx) runs without torch.
"""

from defectmine._lazy import lazy_exports

_EXPORTS = {
    "Outcome": "steps",
    "PreparedData": "data",
    "RunConfig": "config",
    "RunResult": "run",
    "SegmentConfig": "segment_run",
    "build_datasets": "data",
    "check_threshold_options": "config",
    "create_detector": "steps",
    "environment": "runinfo",
    "evaluate_run": "run",
    "evaluate_scores": "steps",
    "evaluate_segment_run": "segment_run",
    "fit_and_evaluate": "steps",
    "fit_detector": "steps",
    "fit_run": "run",
    "fit_segment_run": "segment_run",
    "list_images": "data",
    "load_records": "data",
    "load_run_config": "run",
    "merge_sweep_rows": "sweep",
    "predict_folder": "predict",
    "predict_segment_folder": "segment_predict",
    "prepare_data": "data",
    "run_sweep": "sweep",
    "score_sets": "steps",
    "split_records": "data",
    "training_anomalies": "data",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
