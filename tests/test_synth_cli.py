"""`defectmine synthesize` and `defectmine prompt-segment` end to end on tiny folders."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from defectmine.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_synthesize_writes_pairs_a_fit_run_can_read(synthetic_folder, tmp_path):
    pytest.importorskip("diffusers")
    out = tmp_path / "generated"
    result = invoke("synthesize", "--data", synthetic_folder, "--out", out, "--n", 2, "--image-size", 32,
                    "--train-steps", 2, "--batch-size", 4, "--steps", 2, "--quiet")
    assert result.exit_code == 0, result.output
    for defect in ("scratch", "spot"):
        images = sorted((out / "anomalous" / defect).glob("*.png"))
        assert len(images) == 2
        assert all((out / "masks" / "anomalous" / defect / p.name).is_file() for p in images)
    assert (out / "samples.png").is_file() and (out / "model" / "synth.json").is_file()
    again = invoke("synthesize", "--data", synthetic_folder, "--out", out, "--n", 1, "--image-size", 32, "--quiet")
    assert again.exit_code == 2 and "not empty" in again.output
    unknown = invoke("synthesize", "--data", synthetic_folder, "--out", tmp_path / "o2", "--classes", "crack",
                     "--n", 1, "--image-size", 32, "--train-steps", 1, "--model", out / "model", "--quiet")
    assert unknown.exit_code == 2 and "crack" in unknown.output


def _prompt_folders(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        image = rng.integers(40, 80, size=(48, 48)).astype(np.uint8)
        image[10 + 8 * i:22 + 8 * i, 12:24] = 230
        cv2.imwrite(str(images / f"tile_{i}.png"), image)
    (tmp_path / "bright").mkdir()
    cv2.imwrite(str(tmp_path / "bright" / "a.png"), np.full((12, 12), 230, np.uint8))
    (tmp_path / "tile").mkdir()
    cv2.imwrite(str(tmp_path / "tile" / "b.png"), rng.integers(40, 80, size=(24, 24)).astype(np.uint8))
    return images


def test_prompt_segment_writes_masks_uncertainty_and_report(tmp_path):
    images = _prompt_folders(tmp_path)
    out = tmp_path / "out"
    result = invoke("prompt-segment", "--data", images, "-f", f"bright={tmp_path / 'bright'}",
                    "-b", f"tile={tmp_path / 'tile'}", "--out", out, "--image-size", 32, "--mc-samples", 2,
                    "--uncertainty", "mc", "--quiet")
    assert result.exit_code == 0, result.output
    assert len(list((out / "masks").glob("*.png"))) == 3 and len(list((out / "uncertainty").glob("*.png"))) == 3
    rows = list(csv.DictReader(open(out / "scores.csv")))
    assert len(rows) == 3 and all(0 < float(r["defect_share"]) < 0.6 for r in rows)
    report = (out / "report.html").read_text()
    assert report.count("<figure>") == 3 and "mc uncertainty" in report


def test_prompt_segment_bad_query_is_one_line(tmp_path):
    images = _prompt_folders(tmp_path)
    result = invoke("prompt-segment", "--data", images, "-f", f"crack={tmp_path / 'nowhere'}", "-b",
                    f"tile={tmp_path / 'tile'}", "--out", tmp_path / "o", "--quiet")
    assert result.exit_code == 2 and "is not a folder" in result.output
