"""`predict --ray` and `sweep --ray`: the same outputs as one process, on a local Ray of 2 CPUs; clear errors.

Ray takes seconds to start: every test that needs it shares one module-scoped local Ray and is `slow`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from defectmine.cli import app
from defectmine.distributed import TaskResources, WorkerError, predict_folder_ray, ray_session, run_sweep_ray
from defectmine.distributed.cluster import task_error
from defectmine.distributed.predict import split_shares
from defectmine.errors import ConfigError, DataError
from defectmine.pipeline import RunConfig, fit_run, predict_folder, run_sweep

TINY = {"epochs": 1, "width": 8, "batch_size": 16, "device": "cpu"}


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A tiny fitted run, and a folder to predict: 28 images, one unreadable, one symlink duplicate."""
    from defectmine.data import write_synthetic_folder

    root = tmp_path_factory.mktemp("ray")
    data = write_synthetic_folder(root / "data", n_normal=20, n_anomalous=8, size=32)
    config = RunConfig(data=str(data), detector="fcdd", image_size=32, quiet=True, detector_params=dict(TINY))
    run = fit_run(config, root / "run").run_dir
    (data / "normal" / "broken.png").write_bytes(b"not a png")
    os.symlink(data / "normal" / sorted(os.listdir(data / "normal"))[0], data / "zz_link.png")
    bare = root / "bare_model"  # no run around it: the display range comes from the first batch
    shutil.copytree(run / "model", bare)
    return run / "model", bare, data


def _outputs(folder: Path) -> dict:
    """Every output file's bytes (predict.json without its timings)."""
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    summary = json.loads(files.pop("predict.json").decode().replace(str(folder), "OUT"))
    for key in ("seconds", "images_per_second"):
        summary.pop(key)
    return {**files, "predict.json": summary}


# -- no Ray needed -------------------------------------------------------------------------------------


def test_shares_are_contiguous_whole_batches_in_listing_order():
    shares = split_shares(23, 4, 2)  # 6 batches: 3 each
    assert shares == [range(0, 12), range(12, 23)]
    assert split_shares(5, 4, 8) == [range(0, 4), range(4, 5)]  # never more shares than batches
    assert [i for s in split_shares(101, 8, 7) for i in s] == list(range(101))
    assert all(s.start % 8 == 0 for s in split_shares(101, 8, 7))


def test_without_ray_installed_the_error_gives_the_pip_command(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'defectmine\[ray\]'"):
        with ray_session("auto"):
            pass


def test_bad_task_resources_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"tasks=0"):
        predict_folder_ray(tmp_path / "model", str(tmp_path), tmp_path / "out", tasks=0)
    with pytest.raises(ConfigError, match="--ray-cpus 0"):
        TaskResources(cpus=0)
    with pytest.raises(ConfigError, match="--ray-gpus -1"):
        TaskResources(gpus=-1)


def test_a_failed_task_names_its_share_and_keeps_our_error_type():
    class Failed(Exception):  # stands in for ray.exceptions.RayTaskError
        def __init__(self, cause):
            self.cause = cause

    ours = task_error("Ray share 2 of 3 (images 9-16 of 24, from /x/a.png)", Failed(DataError("/x/b.png: broken")))
    assert isinstance(ours, DataError) and "share 2 of 3" in str(ours) and "/x/b.png: broken" in str(ours)
    other = task_error("sweep fit K=2 seed 0", Failed(MemoryError("out of memory")))
    assert isinstance(other, WorkerError) and "sweep fit K=2 seed 0 failed" in str(other)
    assert "MemoryError: out of memory" in str(other) and "ray logs" in str(other)


def test_an_address_where_nothing_answers_fails_in_seconds(monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.setattr("ray.is_initialized", lambda: False)
    with pytest.raises(ConfigError, match=r"--ray 127\.0\.0\.1:1: cannot connect.*ray start --head"):
        with ray_session("127.0.0.1:1"):
            pass
    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        with ray_session("no-port-here"):
            pass


# -- on a local Ray -----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("model", ["run", "bare"])
def test_ray_predict_writes_what_one_process_writes(local_ray, fitted, tmp_path, model):
    run_model, bare_model, data = fitted
    model_dir = run_model if model == "run" else bare_model
    options = {"batch_size": 4, "skip_bad": True, "quiet": True}
    # Ray's tasks score on one thread each: so do the one process and the driver (which scores a bare
    # model's first batch); sums over another number of threads differ in the last bits, which a
    # byte-for-byte comparison of scores.csv would see
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = predict_folder(model_dir, str(data), tmp_path / "one", **options)
        two = predict_folder_ray(model_dir, str(data), tmp_path / "two", tasks=3, **options)
    finally:
        torch.set_num_threads(threads)
    assert (two.n_scored, two.n_skipped, two.n_duplicates) == (one.n_scored, 1, 1) and one.n_scored == 28
    assert two.display_range == one.display_range
    assert two.display_source == ("run validation maps" if model == "run" else "first batch")
    expected, got = _outputs(tmp_path / "one"), _outputs(tmp_path / "two")
    assert sorted(got) == sorted(expected) and len([k for k in got if k.startswith("overlays/")]) == 28
    assert got == expected  # scores.csv, skipped.csv and every overlay byte for byte
    assert not list((tmp_path / "two").glob(".*"))  # no staging folder or part left behind


@pytest.mark.slow
def test_an_unreadable_file_without_skip_bad_names_the_share_and_the_file(local_ray, fitted, tmp_path):
    run_model, _, data = fitted
    with pytest.raises(DataError, match=r"(?s)Ray share \d of 3 .*broken\.png.*--skip-bad"):
        predict_folder_ray(run_model, str(data), tmp_path / "out", tasks=3, batch_size=4, quiet=True)
    assert not (tmp_path / "out").exists()  # nothing half-written


@pytest.mark.slow
def test_ray_sweep_rows_are_the_serial_rows(local_ray, tmp_path):
    from defectmine.data import write_synthetic_folder

    data = write_synthetic_folder(tmp_path / "data", n_normal=40, n_anomalous=16, size=32)
    base = RunConfig(data=str(data), detector="fcdd", detector_params=dict(TINY, epochs=2), image_size=32)
    # each Ray fit runs on the one core Ray gave it; the serial fits then use one thread too (float sums
    # over another number of threads differ in the last bits, and a fit amplifies that)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        serial = run_sweep(base, ks=[1, 4], seeds=[0, 1], out_dir=tmp_path / "serial", quiet=True)
    finally:
        torch.set_num_threads(threads)
    spread = run_sweep_ray(base, ks=[1, 4], seeds=[0, 1], out_dir=tmp_path / "ray", quiet=True)

    def without_timings(rows):
        return [{k: v for k, v in row.items() if k not in ("fit_seconds", "score_ms_per_image")} for row in rows]

    assert without_timings(spread.rows) == without_timings(serial.rows) and len(serial.rows) == 4
    assert spread.recommendation == serial.recommendation


@pytest.mark.slow
def test_predict_command_takes_ray(local_ray, fitted, tmp_path):
    run_model, _, data = fitted
    result = CliRunner().invoke(app, ["predict", "--model", str(run_model), "--data", str(data / "normal"),
                                      "--out", str(tmp_path / "out"), "--ray", "auto", "--quiet"])
    assert result.exit_code == 2, result.output  # broken.png, no --skip-bad: one line naming share and file
    assert "Ray share" in result.output and "broken.png" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["predict", "--model", str(run_model), "--data", str(data / "anomalous"),
                                      "--out", str(tmp_path / "out"), "--ray", "auto", "--ray-cpus", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "scored 8 of 8" in result.output


@pytest.mark.slow
def test_a_task_no_node_can_run_is_refused_before_it_waits_for_ever(local_ray):
    from defectmine.distributed.cluster import task_slots

    assert task_slots(local_ray, TaskResources(cpus=1)) == 2
    with pytest.raises(ConfigError, match="no node of the Ray cluster has that much.*0 GPU"):
        task_slots(local_ray, TaskResources(cpus=1, gpus=1))


def test_commands_refuse_impossible_task_sizes_before_anything_runs(tmp_path):
    for command in (["predict", "--model", str(tmp_path / "m"), "--data", str(tmp_path)],
                    ["sweep", "--data", str(tmp_path), "--ks", "1"]):
        result = CliRunner().invoke(app, [*command, "--out", str(tmp_path / "out"), "--ray", "auto", "--ray-cpus", "0"])
        assert result.exit_code == 2 and "--ray-cpus 0" in result.output, result.output
