"""A run directory as one consistent unit.

`fit` builds the whole folder under a hidden temporary name beside the target and moves it into place
at the end, so an interrupted fit leaves the old run or nothing, never a mix. Each run records a
fingerprint of its configuration and split, and the hash of its weights; `evaluate` refuses a folder
whose model, split and config do not belong together. Paths in split.csv are relative to the recorded
data root, so the run folder (and the data) can be moved; `--data-root` re-points the data.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from defectmine.errors import ConfigError, DataError

RUN_CONFIG = "config.json"
SPLIT_FILE = "split.csv"
MODEL_DIR = "model"
METRICS_FILE = "metrics.json"
SCORES_FILE = "scores.csv"
REPORT_FILE = "report.html"
WEIGHTS_FILE = "model.safetensors"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_fingerprint(run_settings: dict, split_sha256: str) -> str:
    """A short id of what makes a run: its settings and its split file."""
    text = json.dumps({"run": run_settings, "split": split_sha256}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_out_folder(run_dir: Path, overwrite: bool) -> None:
    """Refuse a non-empty output folder unless `overwrite` (checked before any work is done)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: --out is a file, not a folder. Fix: choose a folder name.")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not overwrite:
        raise ConfigError(
            f"{run_dir}: the output folder is not empty. Fix: choose a new --out, or pass --overwrite to "
            "replace it (the old run is kept until the new one is complete)."
        )


@contextmanager
def staged_folder(run_dir: Path):
    """Yield a hidden temporary folder beside `run_dir`; on success it replaces `run_dir` whole, on any
    error (or Ctrl-C) it is removed and `run_dir` is left as it was."""
    run_dir = Path(run_dir).absolute()
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = run_dir.parent / f".{run_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = run_dir.parent / f".{run_dir.name}.old-{os.getpid()}"
    if run_dir.exists():
        os.replace(run_dir, old)
    os.replace(stage, run_dir)
    shutil.rmtree(old, ignore_errors=True)


@dataclass
class RunRecord:
    """What identifies a run being written into `stage`: its settings, split file and fingerprint."""

    stage: Path
    settings: dict
    data_root: Path
    split_sha256: str
    fingerprint: str

    def save_model(self, model) -> None:
        """Save a detector or segmenter into model/, marked with this run's fingerprint."""
        model.save(self.stage / MODEL_DIR, metadata={"run_fingerprint": self.fingerprint})

    def write_document(self, **parts) -> dict:
        """Write config.json: the settings, data root, `parts` (model, spec, split source, ...), versions,
        time, and the integrity record (fingerprint, split and weights hashes; after `save_model`)."""
        from defectmine.pipeline.runinfo import environment
        from defectmine.report.files import write_json

        document = {
            "run": self.settings,
            "data_root": str(self.data_root),
            **parts,
            "environment": environment(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "integrity": {"fingerprint": self.fingerprint, "split_sha256": self.split_sha256,
                          "weights_sha256": file_sha256(self.stage / MODEL_DIR / WEIGHTS_FILE)},
        }
        write_json(self.stage / RUN_CONFIG, document)
        return document


def record_run(stage: Path, records, settings: dict) -> RunRecord:
    """Write split.csv into `stage` (paths relative to the records' data root) and fingerprint the run."""
    from defectmine.data import write_manifest
    from defectmine.pipeline.data import data_root

    root = data_root(records)
    write_manifest(records, Path(stage) / SPLIT_FILE, root=root)
    split_sha = file_sha256(Path(stage) / SPLIT_FILE)
    return RunRecord(Path(stage), settings, root, split_sha, run_fingerprint(settings, split_sha))


def write_atomic(path: Path, write) -> Path:
    """Call `write(tmp_path)` and move the result over `path` in one step."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_run_document(run_dir: Path) -> dict:
    """config.json of a run folder, or one clear error."""
    path = Path(run_dir) / RUN_CONFIG
    if not Path(run_dir).is_dir():
        raise DataError(f"{run_dir}: no such run folder. Fix: pass a folder written by `defectmine fit`.")
    if not path.is_file():
        raise DataError(f"{run_dir}: not a run directory ({RUN_CONFIG} missing); create one with `defectmine fit`.")
    try:
        document = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err}). Fix: re-create the run with `defectmine fit`.") from None
    if not isinstance(document, dict) or not isinstance(document.get("run"), dict):
        raise DataError(f"{path}: has no 'run' settings. Fix: re-create the run with `defectmine fit`.")
    return document


def check_run_integrity(run_dir: Path, document: dict) -> None:
    """Refuse a run folder whose split or model do not belong to its config.json."""
    run_dir = Path(run_dir)
    recorded = document.get("integrity")
    if not recorded:
        return  # runs written before fingerprints existed: nothing to compare
    split_path, model_path = run_dir / SPLIT_FILE, run_dir / MODEL_DIR
    if not split_path.is_file():
        raise DataError(f"{split_path}: missing. Fix: the run folder is incomplete; re-create it with `defectmine fit`.")
    if file_sha256(split_path) != recorded.get("split_sha256"):
        raise DataError(
            f"{split_path} is not the split this run was fitted on (its content changed or it comes from another "
            "run). Fix: restore the run's own split.csv, or fit a new run."
        )
    model_config = model_path / RUN_CONFIG
    try:
        model_run = json.loads(model_config.read_text()).get("metadata", {}).get("run_fingerprint")
    except (OSError, json.JSONDecodeError, AttributeError):
        model_run = None
    if model_run != recorded.get("fingerprint"):
        raise DataError(
            f"{model_path}: this model was not fitted in this run (fingerprint {model_run!r}, run "
            f"{recorded.get('fingerprint')!r}): the folder mixes files of two runs. Fix: keep each run's model/ "
            "with its own config.json and split.csv, or fit a new run."
        )
    weights = model_path / WEIGHTS_FILE
    if weights.is_file() and file_sha256(weights) != recorded.get("weights_sha256"):
        raise DataError(
            f"{weights}: the weights differ from the ones this run saved. Fix: restore the run's own model/, "
            "or fit a new run."
        )
