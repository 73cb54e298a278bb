"""`predict --model model.onnx`: a run's threshold and display range travel in the file, and the
scores.csv matches the torch predict's, in a process where torch cannot be imported."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from defectmine.cli import app
from defectmine.errors import ConfigError

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytestmark = pytest.mark.slow  # one tiny fit (about 8 s on 2 cores) shared by the module

SRC = Path(__file__).resolve().parents[1] / "src"
# Run the CLI with torch blocked: any `import torch` on the way raises ImportError.
NO_TORCH = ("import sys; sys.modules['torch'] = None; from defectmine.cli import app; "
            "app(sys.argv[1:], prog_name='defectmine')")


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory):
    from defectmine.data import write_synthetic_folder
    from defectmine.export import export_model
    from defectmine.pipeline import RunConfig, fit_run

    root = tmp_path_factory.mktemp("export_run")
    data = write_synthetic_folder(root / "data", n_normal=16, n_anomalous=8, size=32)
    config = RunConfig(data=str(data), detector="fcdd", image_size=32, quiet=True, display_quantile=0.5,
                       detector_params={"epochs": 1, "width": 8, "batch_size": 16, "device": "cpu"})
    result = fit_run(config, root / "run")
    return result.run_dir, data, export_model(result.run_dir)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _run_without_torch(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC), "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", NO_TORCH, *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_the_run_threshold_and_display_range_travel_in_the_file(exported_run):
    run_dir, _, result = exported_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    info = result.info
    assert result.path == run_dir / "model.onnx"
    assert info.threshold == pytest.approx(metrics["threshold"]["value"]) and "metrics.json" in info.threshold_source
    assert info.display_range == {"map_min": pytest.approx(metrics["display_range"]["map_min"]),
                                  "map_max": pytest.approx(metrics["display_range"]["map_max"]),
                                  "display_quantile": 0.5}


def test_onnx_predict_without_torch_gives_the_torch_predicts_scores(exported_run, tmp_path):
    from defectmine.pipeline import predict_folder

    run_dir, data, result = exported_run
    torch_summary = predict_folder(run_dir / "model", str(data), tmp_path / "torch", quiet=True)
    proc = _run_without_torch("predict", "--model", str(result.path), "--data", str(data),
                              "--out", str(tmp_path / "onnx"), "-q")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "threshold" in proc.stdout and "from the exported model" in proc.stdout
    expected, got = _rows(tmp_path / "torch" / "scores.csv"), _rows(tmp_path / "onnx" / "scores.csv")
    assert list(got[0]) == list(expected[0])  # the same columns, overlay included
    assert [(r["path"], r["label"], r["defect_class"]) for r in got] == [
        (r["path"], r["label"], r["defect_class"]) for r in expected]
    differences = [abs(float(a["score"]) - float(b["score"])) for a, b in zip(got, expected)]
    assert max(differences) <= 1e-4
    # an image closer to the threshold than the two runtimes differ may fall either side (max-F1 keeps val
    # images off the boundary, but predict may score others)
    threshold = json.loads((run_dir / "metrics.json").read_text())["threshold"]["value"]
    clear = [i for i, row in enumerate(expected) if abs(float(row["score"]) - threshold) > max(differences)]
    assert len(clear) >= len(expected) - 1
    assert [got[i]["predicted"] for i in clear] == [expected[i]["predicted"] for i in clear]
    assert len(list((tmp_path / "onnx" / "overlays").iterdir())) == torch_summary.n_scored
    written = json.loads((tmp_path / "onnx" / "predict.json").read_text())
    assert written["threshold_source"] == "exported model"
    assert written["display_range"] == pytest.approx(list(torch_summary.display_range))


def test_without_onnxruntime_predict_names_the_pip_command(exported_run, tmp_path):
    _, data, result = exported_run
    blocked = NO_TORCH.replace("sys.modules['torch'] = None", "sys.modules['torch'] = sys.modules['onnxruntime'] = None")
    env = {**os.environ, "PYTHONPATH": str(SRC), "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-c", blocked, "predict", "--model", str(result.path), "--data", str(data),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "pip install 'defectmine[export]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_onnx_predict_refuses_gradcam_and_bad_files(exported_run, tmp_path):
    from defectmine.export import predict_exported

    _, data, result = exported_run
    with pytest.raises(ConfigError, match="native maps only .*Grad-CAM needs gradients"):
        predict_exported(result.path, str(data), tmp_path / "out", heatmap="gradcam", quiet=True)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07garbage")
    cli = CliRunner().invoke(app, ["predict", "--model", str(broken), "--data", str(data), "--out", str(tmp_path / "o")])
    assert cli.exit_code == 2 and "broken.onnx: not a readable ONNX model" in cli.output
    assert "Traceback" not in cli.output
