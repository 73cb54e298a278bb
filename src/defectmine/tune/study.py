"""`defectmine tune`: a hyperparameter search on validation data only, with Optuna.

TPE proposes detector options from a search space (`tune.space`); every trial fits the detector on the
training images and is scored on the validation images; a median pruner stops trials whose
validation curve (the value the detector computes for model selection after each validation) falls
below the median of earlier trials at the same epoch. The study lives in an SQLite file in the tune
folder, so running again with the same folder continues it: `n_trials` counts every finished trial,
and a trial cut short by Ctrl-C or a killed process is not counted and runs again.

Test data never enters the search: the test records are dropped from the split before any image is
decoded (`validation_data`), and every trial's value comes from `validation_value`, which refuses any
record that is not from the validation split.

    result = run_tune(RunConfig(data="my_parts/", detector="fcdd"), Path("runs/tune"), n_trials=30)
    # runs/tune/{study.db, trials.csv, trials.png, best_config.json, tune.json, report.html}
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from defectmine.data import ImageDataset
from defectmine.errors import ConfigError
from defectmine.evaluation.selection import SELECTION_METRICS, validation_value
from defectmine.pipeline.config import RunConfig
from defectmine.pipeline.data import build_datasets, load_records, resolved_data, split_records, training_anomalies
from defectmine.pipeline.steps import check_input_size, create_detector
from defectmine.progress import progress_bar
from defectmine.tune.space import Dimension, default_space, load_space, trial_params

STUDY_FILE = "study.db"
STUDY_NAME = "defectmine-tune"
SETTINGS_ATTR = "defectmine_settings"
DEFAULT_TRIALS = 20
#: Trials the median pruner lets finish before it prunes any (Optuna's default).
PRUNER_STARTUP_TRIALS = 5


def optuna_module():
    """The optuna module, or one ConfigError with the command that installs it."""
    try:
        import optuna
    except ImportError:
        raise ConfigError("defectmine tune needs Optuna, which is not installed. "
                          "Fix: pip install 'defectmine[tune]' (or pip install optuna pyyaml).") from None
    return optuna


@dataclass
class ValidationData:
    """What a tuning trial may see: training images and the validation set. There is no test set here
    on purpose; `n_test_left_out` says how many test records were dropped before decoding."""

    normal: ImageDataset
    anomalous: ImageDataset | None
    val: ImageDataset
    n_test_left_out: int


def validation_data(config: RunConfig) -> ValidationData:
    """The run's split with its test part removed before any image is decoded, then decoded once.

    The validation split must hold normal and defective images (both the pruning curve and the
    trial value need them); otherwise one ConfigError says so before anything is decoded.
    """
    split = split_records(load_records(config.data), config)
    n_test = len(split.test)
    split = replace(split, test=[])  # from here on the test images do not exist for the search
    n_defective = sum(r.is_anomalous for r in split.val)
    if not split.val or n_defective in (0, len(split.val)):
        raise ConfigError(
            f"{config.data}: tune scores trials on the validation split, which needs normal and defective images "
            f"(it holds {len(split.val) - n_defective} normal and {n_defective} defective). Fix: put both in the "
            "validation split (a manifest's split column) or let the seeded split make one.")
    data = build_datasets(split, training_anomalies(split, config), config)
    return ValidationData(data.normal, data.anomalous, data.val, n_test)


def pruning_report(trial, optuna):
    """The `on_validation` callback of a trial's fit: report each validation value to Optuna and
    abandon the fit (optuna.TrialPruned) when the pruner says so."""

    def report(epoch: int, value: float) -> None:
        if value is None or not math.isfinite(value):
            return
        trial.report(float(value), epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch + 1}: validation value {value:.4f} below the median")

    return report


def run_trial(trial, base: RunConfig, dimensions: list[Dimension], data: ValidationData, metric: str, optuna) -> float:
    """One trial: the options it proposes over `base`, a fit with pruning, its validation `metric`."""
    values = {dim.name: dim.suggest(trial) for dim in dimensions}
    config = replace(base, detector_params=trial_params(dimensions, values, base.detector_params), quiet=True)
    detector = create_detector(config)
    check_input_size(detector, config)
    detector.fit(data.normal, data.anomalous, val=data.val, on_validation=pruning_report(trial, optuna))
    trial.set_user_attr("best_epoch", getattr(detector, "best_epoch_", None))
    trial.set_user_attr("stopped_epoch", getattr(detector, "stopped_epoch_", None))
    scores = detector.score(data.val, maps=False)
    return validation_value(metric, data.val, scores.image)


@dataclass
class TuneResult:
    """A finished (or budget-ended) search: counts, the best trial and the files written."""

    out_dir: Path
    n_finished: int
    best_value: float | None
    best_params: dict | None
    files: dict[str, Path] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)


def study_settings(base: RunConfig, dimensions: list[Dimension], metric: str) -> dict:
    """What a study is about; a folder holding a study of other settings is not continued."""
    run = {k: v for k, v in asdict(base).items() if k != "quiet"}
    run["data"] = resolved_data(base.data)
    return {"run": run, "space": {d.name: d.to_dict() for d in dimensions}, "metric": metric}


def open_study(out_dir: Path, settings: dict, seed: int, optuna):
    """The study in `out_dir`/study.db (created or continued), its settings checked against `settings`.

    Trials left RUNNING by an interrupted run are marked failed (not counted, so they run again).
    The TPE seed is `seed` plus the number of earlier trials, so a continued study does not propose
    its first trials again.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{(out_dir / STUDY_FILE).resolve()}"
    study = optuna.create_study(
        study_name=STUDY_NAME, storage=storage, load_if_exists=True, direction="maximize",
        pruner=optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS))
    wanted = json.loads(json.dumps(settings))  # as stored: JSON types (lists, not tuples)
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if stored is None:
        study.set_user_attr(SETTINGS_ATTR, wanted)
    elif stored != wanted:
        differ = [f"run.{k}" for k in sorted(set(stored.get("run", {})) | set(wanted["run"]))
                  if stored.get("run", {}).get(k) != wanted["run"].get(k)]
        differ += [k for k in ("space", "metric") if stored.get(k) != wanted.get(k)]
        raise ConfigError(
            f"{out_dir}: holds a study with other settings ({', '.join(differ)} differ), so it cannot be continued. "
            "Fix: use a new --out, or the settings of that study (see its tune.json).")
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials))
    return study


def counted_trials(study, optuna) -> int:
    """Finished trials that count towards the budget: complete, pruned, and failed with an error of
    their own (bad options, a diverging loss); not those cut short by an interruption."""
    state = optuna.trial.TrialState
    return sum(t.state in (state.COMPLETE, state.PRUNED) or (t.state == state.FAIL and "error" in t.user_attrs)
               for t in study.get_trials(deepcopy=False))


def run_tune(base: RunConfig, out_dir: Path | str, *, n_trials: int | None = None, minutes: float | None = None,
             space: list[Dimension] | Path | str | None = None, metric: str = "auroc", seed: int = 0,
             quiet: bool | None = None) -> TuneResult:
    """Search detector options for `base` on its validation split; write the tune folder.

    n_trials: total finished trials of the study (earlier runs in the folder included); minutes: wall
    time for this call; with neither, DEFAULT_TRIALS. space: dimensions, a YAML/JSON file, or None for
    the detector's default space. metric: "auroc" or "max_f1" on the validation images. quiet: no
    progress (default: `base.quiet`).
    """
    optuna = optuna_module()
    out_dir = Path(out_dir)
    if n_trials is None and minutes is None:
        n_trials = DEFAULT_TRIALS
    if n_trials is not None and (isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1):
        raise ConfigError(f"--trials {n_trials!r}: must be a whole number >= 1.")
    if minutes is not None and not (isinstance(minutes, (int, float)) and math.isfinite(minutes) and minutes > 0):
        raise ConfigError(f"--minutes {minutes!r}: must be a positive number.")
    if metric not in SELECTION_METRICS:
        raise ConfigError(f"--metric {metric!r} is unknown. Fix: use one of {', '.join(SELECTION_METRICS)}.")
    if space is None:
        dimensions = default_space(base.detector, base.detector_params)
    elif isinstance(space, (str, Path)):
        dimensions = load_space(space, base.detector)
    else:
        dimensions = list(space)
    check_input_size(create_detector(base), base)  # bad base options fail now, before any decoding

    from defectmine.tune.report import write_tune_outputs

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our progress bar says what Optuna's INFO lines say
    try:
        settings = study_settings(base, dimensions, metric)
        study = open_study(out_dir, settings, seed, optuna)
        started, deadline = time.monotonic(), None if minutes is None else time.monotonic() + 60 * minutes
        counted = counted_trials(study, optuna)
        data = None
        with progress_bar(base.quiet if quiet is None else quiet) as bar:
            task = bar.add_task("tune", total=n_trials, completed=counted, status="")
            while (n_trials is None or counted < n_trials) and (deadline is None or time.monotonic() < deadline):
                data = validation_data(base) if data is None else data  # decoded once, only when a trial runs
                trial = study.ask()
                status = _run_one(study, trial, base, dimensions, data, metric, optuna)
                counted = counted_trials(study, optuna)
                write_tune_outputs(out_dir, study, settings, base, dimensions, metric,
                                   n_test_left_out=data.n_test_left_out, seconds=time.monotonic() - started)
                bar.update(task, completed=counted, status=status)
        return write_tune_outputs(out_dir, study, settings, base, dimensions, metric,
                                  n_test_left_out=None if data is None else data.n_test_left_out,
                                  seconds=time.monotonic() - started)
    finally:
        optuna.logging.set_verbosity(verbosity)


def _run_one(study, trial, base, dimensions, data, metric, optuna) -> str:
    """Run and record one trial; returns its progress status. An interruption marks it failed (not
    counted) and is raised on."""
    state = optuna.trial.TrialState
    try:
        value = run_trial(trial, base, dimensions, data, metric, optuna)
    except optuna.TrialPruned as err:
        study.tell(trial, state=state.PRUNED)
        return f"trial {trial.number} {err}"
    except (ConfigError, FloatingPointError) as err:  # options that cannot work: recorded, the search goes on
        trial.set_user_attr("error", " ".join(str(err).split())[:500])
        study.tell(trial, state=state.FAIL)
        return f"trial {trial.number} failed: {str(err).splitlines()[0][:80]}"
    except BaseException:
        study.tell(trial, state=state.FAIL)
        raise
    study.tell(trial, value)
    return f"trial {trial.number} {metric} {value:.4f} (best {study.best_value:.4f})"
