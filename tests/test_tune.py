"""`defectmine tune`: two trials and a resume, interruptions, the val-only guarantee, pruning, and the
best config that `fit --config` takes."""

import csv
import hashlib
import inspect
import json
import re
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

optuna = pytest.importorskip("optuna")

import defectmine.pipeline.data as pipeline_data  # noqa: E402
import defectmine.tune.study as tune_study  # noqa: E402
from defectmine.cli import app  # noqa: E402
from defectmine.data import (  # noqa: E402
    ImageDataset, ImageSpec, make_split, scan_folder, write_manifest, write_synthetic_folder)
from defectmine.errors import ConfigError, DataError  # noqa: E402
from defectmine.models.registry import DETECTORS, create  # noqa: E402
from defectmine.pipeline import RunConfig, fit_run  # noqa: E402
from defectmine.tune import parse_space, run_tune  # noqa: E402

PARAMS = {"width": 4, "batch_size": 8, "device": "cpu", "eval_every": 1}
SPACE = {"lr": {"low": 1e-4, "high": 1e-2, "log": True}, "epochs": {"low": 1, "high": 2}}
runner = CliRunner()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_synthetic_folder(tmp_path_factory.mktemp("tune") / "data", n_normal=24, n_anomalous=10)


def _base(data, **kwargs) -> RunConfig:
    settings = {"detector": "fcdd", "image_size": 32, "detector_params": dict(PARAMS), "quiet": True, **kwargs}
    return RunConfig(data=str(data), **settings)


def _space():
    return parse_space("fcdd", SPACE, "test")


@pytest.fixture(scope="module")
def two_trials(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "tune"
    return out, run_tune(_base(data), out, n_trials=2, space=_space())


def _states(out: Path) -> list[str]:
    with (out / "trials.csv").open() as f:
        return [row["state"] for row in csv.DictReader(f)]


def _copy(folder: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(folder, tmp_path / "copy"))


# -- the search and its files -----------------------------------------------------------------------
def test_two_trials_write_every_file_and_a_best_config_fit_takes(two_trials):
    out, result = two_trials
    assert {p.name for p in out.iterdir()} >= {"study.db", "trials.csv", "trials.png", "best_config.json",
                                               "tune.json", "report.html"}
    assert result.n_finished == 2 and _states(out) == ["complete", "complete"]
    document = json.loads((out / "best_config.json").read_text())
    assert document["run"]["detector_params"]["epochs"] == result.best_params["epochs"]
    assert document["run"]["detector_params"]["lr"] == pytest.approx(result.best_params["lr"])
    assert document["run"]["quiet"] is False and document["tune"]["value"] == pytest.approx(result.best_value)
    assert (out / "trials.png").read_bytes()[:4] == b"\x89PNG"
    page = (out / "report.html").read_text()
    assert "Best trial" in page and "fit --config best_config.json" in page


def test_resume_continues_the_study_and_trials_count_the_total(two_trials, tmp_path, monkeypatch):
    out = _copy(two_trials[0], tmp_path)
    calls = []
    real = tune_study.run_trial
    monkeypatch.setattr(tune_study, "run_trial", lambda trial, *a: calls.append(trial.number) or real(trial, *a))
    result = run_tune(_base_data(out), out, n_trials=3, space=_space())
    assert calls == [2] and result.n_finished == 3 and _states(out) == ["complete"] * 3
    run_tune(_base_data(out), out, n_trials=3, space=_space())  # already done: nothing runs
    assert calls == [2]


def _base_data(out: Path) -> RunConfig:
    """The base config a tune folder was made with (its tune.json records the data path)."""
    run = json.loads((out / "tune.json").read_text())["settings"]["run"]
    return _base(run["data"])


def test_a_folder_with_other_settings_is_not_continued(two_trials, tmp_path):
    out = _copy(two_trials[0], tmp_path)
    with pytest.raises(ConfigError, match="other settings.*run.image_size.*new --out"):
        run_tune(_base(_base_data(out).data, image_size=48), out, n_trials=3, space=_space())


@pytest.mark.slow
def test_an_interrupted_trial_is_failed_not_counted_and_runs_again(data, tmp_path, monkeypatch):
    out = tmp_path / "tune"
    real = tune_study.run_trial

    def interrupt_second(trial, *args):
        if trial.number == 1:
            raise KeyboardInterrupt
        return real(trial, *args)

    monkeypatch.setattr(tune_study, "run_trial", interrupt_second)
    with pytest.raises(KeyboardInterrupt):
        run_tune(_base(data), out, n_trials=2, space=_space())
    assert _states(out) == ["complete"]  # outputs are written after every finished trial
    # a process killed outright leaves its trial RUNNING: the next run marks it failed
    study = optuna.load_study(study_name=tune_study.STUDY_NAME, storage=f"sqlite:///{out / 'study.db'}")
    study.ask()
    monkeypatch.setattr(tune_study, "run_trial", real)
    result = run_tune(_base(data), out, n_trials=2, space=_space())
    assert _states(out) == ["complete", "fail", "fail", "complete"] and result.n_finished == 2


def test_trials_that_cannot_work_are_recorded_and_the_search_goes_on(data, tmp_path):
    # an lr so high that the weights overflow float32 at once: the loss becomes NaN or infinite
    space = parse_space("fcdd", {"lr": {"low": 1e30, "high": 1e31}, "epochs": {"low": 1, "high": 2}}, "test")
    result = run_tune(_base(data), tmp_path / "tune", n_trials=2, space=space)
    rows = result.rows
    assert [r["state"] for r in rows] == ["fail", "fail"] and result.best_params is None
    assert all(re.search("lower the learning rate|infinite", r["error"]) for r in rows)
    assert not (tmp_path / "tune" / "best_config.json").exists()


# -- test data never enters the search ------------------------------------------------------------
def _split_records(data: Path) -> list:
    return make_split(scan_folder(data), n_train_anomalous=4, seed=0).to_records()


@pytest.fixture(scope="module")
def poisoned(data, tmp_path_factory) -> Path:
    """A manifest whose test images are not images at all: decoding any of them fails."""
    root = tmp_path_factory.mktemp("poisoned")
    records = []
    for record in _split_records(data):
        if record.split == "test":
            bad = root / "test" / record.path.name
            bad.parent.mkdir(parents=True, exist_ok=True)
            bad.write_bytes(b"not an image: the tuner must never open me")
            record = replace(record, path=bad, mask=None)
        records.append(record)
    return write_manifest(records, root / "split.csv")


@pytest.mark.slow
def test_test_images_are_never_decoded_nor_scored(poisoned, tmp_path, monkeypatch):
    with pytest.raises(DataError, match="could not be loaded"):  # the poison is real: fit does decode test
        fit_run(_base(poisoned, threshold_rule="max_f1"), tmp_path / "run")
    decoded, scored = [], []
    real_dataset = pipeline_data.ImageDataset

    def spy_dataset(records, *args, **kwargs):
        decoded.extend(r.split for r in records)
        return real_dataset(records, *args, **kwargs)

    real_value = tune_study.validation_value

    def spy_value(metric, dataset, scores):
        scored.extend(r.split for r in dataset.records)
        return real_value(metric, dataset, scores)

    monkeypatch.setattr(pipeline_data, "ImageDataset", spy_dataset)
    monkeypatch.setattr(tune_study, "validation_value", spy_value)
    result = run_tune(_base(poisoned), tmp_path / "tune", n_trials=2, space=_space())
    assert result.n_finished == 2 and "test" not in decoded and "val" in decoded
    assert scored and set(scored) == {"val"}
    assert json.loads((tmp_path / "tune" / "tune.json").read_text())["test_records_left_out"] > 0


def test_validation_data_has_no_test_set_and_needs_both_classes_in_val(data, poisoned, tmp_path):
    seen = tune_study.validation_data(_base(poisoned))
    assert not hasattr(seen, "test") and {r.split for r in seen.val.records} == {"val"}
    records = [r for r in _split_records(data) if not (r.split == "val" and r.is_anomalous)]
    only_normal = write_manifest(records, tmp_path / "normal_val.csv")
    with pytest.raises(ConfigError, match="needs normal and defective"):
        tune_study.validation_data(_base(only_normal, threshold_rule="mean_std"))


# -- pruning on the validation curve ----------------------------------------------------------------
class FakeTrial:
    def __init__(self, prune_at: int):
        self.reports, self.prune_at = [], prune_at

    def report(self, value, step):
        self.reports.append((step, value))

    def should_prune(self):
        return len(self.reports) > self.prune_at


def test_the_pruning_report_reports_each_validation_and_raises_when_told():
    trial = FakeTrial(prune_at=1)
    report = tune_study.pruning_report(trial, optuna)
    report(0, 0.5)
    report(1, float("nan"))  # not reported: Optuna would take NaN as a value
    with pytest.raises(optuna.TrialPruned, match="after epoch 3"):
        report(2, 0.4)
    assert trial.reports == [(0, 0.5), (2, 0.4)]


@pytest.mark.slow
def test_a_pruned_trial_is_recorded_and_counted(data, tmp_path, monkeypatch):
    def pruned(trial, *args):
        trial.report(0.25, 0)
        raise optuna.TrialPruned("pruned after epoch 1")

    monkeypatch.setattr(tune_study, "run_trial", pruned)
    result = run_tune(_base(data), tmp_path / "tune", n_trials=2, space=_space())
    assert [r["state"] for r in result.rows] == ["pruned", "pruned"] and result.n_finished == 2
    assert result.rows[0]["last_curve_value"] == 0.25 and result.rows[0]["val_auroc"] is None


def _weights(detector) -> str:
    return hashlib.sha256(b"".join(t.numpy().tobytes() for t in detector.network_.state_dict().values())).hexdigest()


def test_the_validation_hook_sees_every_validation_and_changes_no_weight(data):
    split = make_split(scan_folder(data), n_train_anomalous=4, seed=0)
    spec = ImageSpec(size=(32, 32), channels=1)
    normal, anomalous, val = (ImageDataset(s, spec) for s in (split.normal_train, split.train_anomalous, split.val))
    params = {**PARAMS, "epochs": 3, "quiet": True}
    plain = create("fcdd", **params).fit(normal, anomalous, val=val)
    seen = []
    hooked = create("fcdd", **params).fit(normal, anomalous, val=val, on_validation=lambda e, v: seen.append(e))
    assert seen == [0, 1, 2] and _weights(plain) == _weights(hooked)


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_every_detector_takes_the_validation_hook(name):
    # run_trial passes it to every fit: a detector without it could not be tuned
    assert "on_validation" in inspect.signature(DETECTORS[name].fit).parameters


# -- errors and the command line -------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"n_trials": 0}, "--trials 0"),
    ({"minutes": -1}, "--minutes -1"),
    ({"metric": "accuracy"}, "--metric 'accuracy'.*auroc, max_f1"),
    ({"space": "missing.yaml"}, "--space missing.yaml: no such file"),
])
def test_bad_options_fail_before_anything_is_written(data, tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        run_tune(_base(data), tmp_path / "tune", **{"space": _space(), **kwargs})
    assert not (tmp_path / "tune").exists()


def test_without_optuna_one_error_names_the_install_command(data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(ConfigError, match=r"pip install 'defectmine\[tune\]'"):
        run_tune(_base(data), tmp_path / "tune", n_trials=1)


FAST = ["--image-size", "32", "-p", "width=4", "-p", "batch_size=8", "-p", "eval_every=1", "--device", "cpu", "-q"]


@pytest.mark.slow
def test_tune_command_then_fit_config_reproduces_the_best_trial(data, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("lr: {low: 1.0e-4, high: 1.0e-2, log: true}\nepochs: {low: 1, high: 2}\n")
    out = tmp_path / "tune"
    result = runner.invoke(app, ["tune", "--data", str(data), "--trials", "2", "--space", str(space),
                                 "--out", str(out), *FAST])
    assert result.exit_code == 0, result.output
    assert "best config" in result.output and "val auroc" in result.output
    best = json.loads((out / "best_config.json").read_text())
    fitted = runner.invoke(app, ["fit", "--config", str(out / "best_config.json"), "--out", str(tmp_path / "run"),
                                 "-q"])
    assert fitted.exit_code == 0, fitted.output
    run = json.loads((tmp_path / "run" / "config.json").read_text())["run"]
    assert run["detector_params"] == best["run"]["detector_params"] and run["data"] == best["run"]["data"]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["val"]["auroc"] == pytest.approx(best["tune"]["value"])  # the same fit, seeded


@pytest.mark.parametrize("args, message", [
    (["--metric", "f2"], "--metric 'f2' is unknown"),
    (["--preset", "fastest"], "--preset 'fastest' is unknown.*quality"),
    (["--trials", "0"], "--trials 0"),
])
def test_tune_command_bad_input_is_one_clear_line(data, tmp_path, args, message):
    result = runner.invoke(app, ["tune", "--data", str(data), "--out", str(tmp_path / "t"), *args, *FAST])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert re.search(message, result.output), result.output


def test_tune_command_without_data_says_so(tmp_path):
    result = runner.invoke(app, ["tune", "--out", str(tmp_path / "t"), "-q"])
    assert result.exit_code == 2 and "--data is missing" in result.output
