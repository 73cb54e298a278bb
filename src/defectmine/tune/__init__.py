"""Hyperparameter search on validation data only (`defectmine tune`) and the named presets
(`fit --preset NAME`). Sits above the pipeline and calls it; never reaches inside a model.

    from defectmine.pipeline import RunConfig
    from defectmine.tune import run_tune

    result = run_tune(RunConfig(data="my_parts/", detector="fcdd"), "runs/tune", n_trials=30)
    print(result.best_value, result.best_params)     # runs/tune/best_config.json: for `fit --config`

Optuna is an optional dependency (`pip install 'defectmine[tune]'`); presets need nothing extra.
"""

from defectmine.tune.presets import PRESETS, Preset, apply_preset, get_preset
from defectmine.tune.space import Dimension, default_space, load_space, parse_space
from defectmine.tune.study import TuneResult, run_tune, validation_data

__all__ = [
    "PRESETS",
    "Dimension",
    "Preset",
    "TuneResult",
    "apply_preset",
    "default_space",
    "get_preset",
    "load_space",
    "parse_space",
    "run_tune",
    "validation_data",
]
