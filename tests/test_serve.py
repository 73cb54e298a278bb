"""`defectmine serve`: scoring over HTTP with a real tiny run (detector and segmenter), bad input as JSON
4xx that never takes the service down, the review queue and its labels, and the CLI's errors."""

from __future__ import annotations

import base64
import csv
import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'defectmine[serve]')")
from fastapi.testclient import TestClient  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from defectmine.cli import app as cli_app  # noqa: E402
from defectmine.errors import ConfigError, DataError  # noqa: E402
from defectmine.serve import (  # noqa: E402
    ReviewStore, Scored, ServeSettings, UploadLimits, create_app, load_served_model,
)

runner = CliRunner()
FAST = ["--image-size", "32", "--epochs", "1", "-p", "width=8", "-p", "batch_size=16", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny detector run (1 epoch, 32 px) and its synthetic data."""
    from defectmine.data import write_synthetic_folder

    root = tmp_path_factory.mktemp("serve")
    data = write_synthetic_folder(root / "data", n_normal=24, n_anomalous=12, size=32)
    result = runner.invoke(cli_app, ["fit", "--data", str(data), "--out", str(root / "run"), *FAST])
    assert result.exit_code == 0, result.output
    return root / "run", data


def _png(data_dir, name="anomalous/spot/spot_001.png") -> bytes:
    return (data_dir / name).read_bytes()


def _client(run_dir, tmp_path, **settings):
    return TestClient(create_app(run_dir, ServeSettings(review_dir=tmp_path / "review", **settings)))


def _encode(array: np.ndarray, fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


# -- scoring ---------------------------------------------------------------------------------------------

def test_score_one_and_many_images_with_the_runs_threshold_and_heatmaps(run, tmp_path):
    run_dir, data = run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    with _client(run_dir, tmp_path) as client:
        assert client.get("/health").json()["status"] == "ok"
        model = client.get("/model").json()
        assert model["kind"] == "detector" and model["threshold"] == metrics["threshold"]["value"]
        assert model["classes"] == ["scratch", "spot"] and model["metrics"]["test"]["auroc"] == metrics["test"]["auroc"]
        assert model["version"] and model["model"]["detector"] == "fcdd"
        files = [("files", (name, _png(data, name), "image/png"))
                 for name in ("anomalous/spot/spot_001.png", "normal/normal_000.png", "normal/normal_001.png")]
        answer = client.post("/score?heatmap=true", files=files)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["threshold"] == model["threshold"] and len(body["results"]) == 3
        for row, (_, (name, _, _)) in zip(body["results"], files):
            assert row["name"] == name and np.isfinite(row["score"]) and row["areas"] is None
            assert row["decision"] == ("anomalous" if row["score"] >= body["threshold"] else "normal")
            heat = Image.open(io.BytesIO(base64.b64decode(row["heatmap_png"])))
            assert heat.size == (32, 32) and heat.mode == "RGB"
        raw = client.post("/score", content=_png(data, "normal/normal_000.png"), headers={"content-type": "image/png"})
        assert raw.status_code == 200 and "heatmap_png" not in raw.json()["results"][0]
        assert raw.json()["results"][0]["score"] == pytest.approx(body["results"][1]["score"], rel=1e-5)


def test_service_scores_as_predict_does(run, tmp_path):
    """The same file gives the same score through the service and through `defectmine predict` (same
    decoding and resizing), also for a colour JPEG of another size."""
    from defectmine.pipeline.predict import predict_folder

    run_dir, data = run
    folder = tmp_path / "images"
    folder.mkdir()
    rgb = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    (folder / "colour.jpg").write_bytes(_encode(rgb, "JPEG"))
    shutil.copy(data / "anomalous/scratch/scratch_000.png", folder / "scratch.png")
    predict_folder(run_dir / "model", str(folder), tmp_path / "preds", quiet=True)
    with open(tmp_path / "preds" / "scores.csv") as f:
        expected = {row["path"].rsplit("/", 1)[-1]: float(row["score"]) for row in csv.DictReader(f)}
    with _client(run_dir, tmp_path) as client:
        files = [("files", (name, (folder / name).read_bytes(), "application/octet-stream")) for name in expected]
        got = {row["name"]: row["score"] for row in client.post("/score", files=files).json()["results"]}
    assert got == pytest.approx(expected, rel=1e-5)


def _sparse_png(width: int, height: int) -> bytes:
    """A PNG whose header says `width` x `height` (gray) in a few kB: only its first rows are there, so
    only a check of the header, before decoding, can refuse it quickly."""
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    raw = zlib.compress(b"\x00" * (width + 1) * 64)  # only the first rows: the decoder would fail later
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


BAD = {
    "not an image": (b"this is text, not pixels", "image/png", 415, "not an image"),
    "truncated": (None, "image/png", 422, "cannot read the image"),
    "empty body": (b"", "image/png", 400, "empty"),
    "wrong content type": (None, "application/json", 415, "Content-Type 'application/json'"),
    "no content type": (None, "", 415, "Content-Type '(none)'"),
    "huge image": ("huge", "image/png", 413, "10000 x 10000 = 100000000 pixels"),
    "beyond PIL's bomb guard": ("bomb", "image/png", 413, "decompression bomb"),
}


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_answers_4xx_json_and_the_service_goes_on(run, tmp_path, case):
    run_dir, data = run
    body, content_type, status, fragment = BAD[case]
    good = _png(data)
    body = {None: good[: len(good) // 2] if case == "truncated" else good, "huge": _sparse_png(10000, 10000),
                   "bomb": _sparse_png(20000, 20000)}.get(
        body, body) if not isinstance(body, bytes) else body
    with _client(run_dir, tmp_path) as client:
        answer = client.post("/score", content=body, headers={"content-type": content_type} if content_type else {})
        assert answer.status_code == status, answer.text
        assert fragment in answer.json()["error"] and "Fix:" in answer.json()["error"]
        assert client.get("/health").json()["status"] == "ok"
        assert client.post("/score", content=good, headers={"content-type": "image/png"}).status_code == 200


def test_limits_on_bytes_pixels_and_files_are_configured(run, tmp_path):
    run_dir, data = run
    limits = UploadLimits(max_bytes=len(_png(data)) - 1, max_pixels=10_000)
    with _client(run_dir, tmp_path, limits=limits, max_files=2) as client:
        too_big = client.post("/score", content=_png(data), headers={"content-type": "image/png"})
        assert too_big.status_code == 413 and "bytes is more than the limit" in too_big.json()["error"]
    with _client(run_dir, tmp_path, limits=UploadLimits(max_pixels=32 * 32 - 1)) as client:
        too_many_pixels = client.post("/score", content=_png(data), headers={"content-type": "image/png"})
        assert too_many_pixels.status_code == 413 and "32 x 32 = 1024 pixels" in too_many_pixels.json()["error"]
    with _client(run_dir, tmp_path, max_files=2) as client:
        files = [("files", (f"{k}.png", _png(data), "image/png")) for k in range(3)]
        assert client.post("/score", files=files).status_code == 400


def test_one_bad_file_refuses_the_whole_request_and_names_it(run, tmp_path):
    run_dir, data = run
    with _client(run_dir, tmp_path) as client:
        files = [("files", ("good.png", _png(data), "image/png")), ("files", ("broken.png", b"GIF89a-nope", "image/png"))]
        answer = client.post("/score", files=files)
        assert answer.status_code == 415 and answer.json()["error"].startswith("broken.png:")
        assert "none of the request's images was scored" in answer.json()["error"]
        assert client.get("/review/items").json()["items"] == []
        no_file = client.post("/score", files={"note": (None, "a field, not a file")})
        assert no_file.status_code == 400 and "no file part" in no_file.json()["error"]
        broken_form = client.post("/score", content=b"--x\r\nnonsense", headers={"content-type": "multipart/form-data"})
        assert 400 <= broken_form.status_code < 500


def test_a_run_without_a_model_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="not a run folder"):
        load_served_model(tmp_path)


# -- segmenters -----------------------------------------------------------------------------------------

def test_a_segmenter_run_answers_per_class_areas_from_its_class_mask(tmp_path_factory, tmp_path):
    from defectmine.data import write_synthetic_folder

    root = tmp_path_factory.mktemp("serve-seg")
    data = write_synthetic_folder(root / "data", n_normal=16, n_anomalous=12, size=32)
    fit = runner.invoke(cli_app, ["segment", "fit", "--data", str(data), "--out", str(root / "run"), "--encoder",
                                  "cnn", "--epochs", "1", "--image-size", "32", "--device", "cpu",
                                  "-p", "batch_size=8", "-q"])
    assert fit.exit_code == 0, fit.output
    with _client(root / "run", tmp_path) as client:
        model = client.get("/model").json()
        assert model["kind"] == "segmenter" and model["classes"] == ["scratch", "spot"]
        answer = client.post("/score", files=[("files", ("s.png", _png(data), "image/png"))]).json()
    row = answer["results"][0]
    assert set(row["areas"]) == {"scratch", "spot"}
    total = sum(area["pixels"] for area in row["areas"].values())
    assert 0 <= total <= 32 * 32
    for area in row["areas"].values():
        assert area["percent"] == pytest.approx(100 * area["pixels"] / (32 * 32), abs=1e-3)
    assert row["decision"] in ("anomalous", "normal")
    assert row["predicted_class"] in (None, "scratch", "spot")


# -- review queue ---------------------------------------------------------------------------------------

def test_review_queue_is_sorted_by_score_and_labels_go_to_the_csv(run, tmp_path):
    run_dir, data = run
    with _client(run_dir, tmp_path) as client:
        names = ["anomalous/spot/spot_001.png", "normal/normal_000.png", "anomalous/scratch/scratch_000.png"]
        client.post("/score", files=[("files", (n, _png(data, n), "image/png")) for n in names])
        items = client.get("/review/items").json()
        assert items["labels"] == ["normal", "scratch", "spot"]
        scores = [item["score"] for item in items["items"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True)
        first = items["items"][0]
        assert client.get(f"/review/items/{first['id']}/overlay.png").headers["content-type"] == "image/png"
        page = client.get("/review").text
        assert page.count('class="card') == 3 and page.index(first["id"]) < page.index(items["items"][1]["id"])
        answer = client.post(f"/review/items/{first['id']}/label", json={"label": "spot", "reviewer": "ana"})
        assert answer.status_code == 200 and answer.json()["label"] == "spot"
        wrong = client.post(f"/review/items/{first['id']}/label", json={"label": "dent", "reviewer": "ana"})
        assert wrong.status_code == 422 and "'dent' is not one of normal, scratch, spot" in wrong.json()["error"]
        assert client.post("/review/items/nope/label", json={"label": "normal"}).status_code == 404
        assert client.post(f"/review/items/{first['id']}/label", content=b"{").status_code == 400
        queue = client.get("/review/items").json()["items"]
        assert queue[-1]["id"] == first["id"] and queue[-1]["label"] == "spot"  # reviewed items go last
    with open(tmp_path / "review" / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["label"], r["reviewer"]) for r in rows] == [("spot", "ana")]
    stored = rows[0]["image_id"]
    assert open(stored, "rb").read() == _png(data, first["name"])  # the label points at the uploaded bytes


def test_a_label_sink_receives_every_label(run, tmp_path):
    run_dir, data = run

    class Sink:
        def __init__(self):
            self.records = []

        def record(self, image_id, label, reviewer):
            self.records.append((image_id, label, reviewer))

    sink = Sink()
    with TestClient(create_app(run_dir, ServeSettings(review_dir=tmp_path / "r"), sink=sink)) as client:
        item = client.post("/score", content=_png(data), headers={"content-type": "image/png"}).json()["results"][0]
        client.post(f"/review/items/{item['review_id']}/label", json={"label": "normal", "reviewer": ""})
    assert len(sink.records) == 1 and sink.records[0][1:] == ("normal", "anonymous")
    assert not (tmp_path / "r" / "labels.csv").exists()


def test_review_store_is_bounded_and_survives_a_restart(tmp_path):
    overlay = np.zeros((4, 4, 3), dtype=np.uint8)
    store = ReviewStore(tmp_path, classes=("crack",), max_items=2)
    added = [store.add(f"{k}.png", Scored(float(k), "normal", None, overlay), data=b"pixels") for k in range(3)]
    assert [item["id"] for item in store.queue()] == [added[2].id, added[1].id]
    assert not list((tmp_path / "items").glob(f"{added[0].id}*"))  # the oldest left with its files
    again = ReviewStore(tmp_path, classes=("crack",), max_items=2)
    assert [item["id"] for item in again.queue()] == [added[2].id, added[1].id]
    with pytest.raises(ConfigError, match="--review-max"):
        ReviewStore(tmp_path, max_items=0)


def test_review_folder_is_scored_into_the_queue_at_start_once(run, tmp_path):
    run_dir, data = run
    settings = dict(review_folder=data / "anomalous")
    with _client(run_dir, tmp_path, **settings) as client:
        items = client.get("/review/items").json()["items"]
    assert len(items) == 12 and all(item["image_path"].startswith(str(data)) for item in items)
    with _client(run_dir, tmp_path, **settings) as client:  # a restart does not add them twice
        assert len(client.get("/review/items").json()["items"]) == 12
    with pytest.raises(ConfigError, match="--review-folder"):
        ServeSettings(review_folder=tmp_path / "nowhere")


# -- CLI and packaging ----------------------------------------------------------------------------------

def test_cli_serve_refuses_a_folder_that_is_not_a_run_in_one_line(tmp_path):
    result = runner.invoke(cli_app, ["serve", str(tmp_path)])
    assert result.exit_code == 2 and result.output.startswith("error:") and "not a run folder" in result.output
    assert "Traceback" not in result.output
    assert "--review-folder" in runner.invoke(cli_app, ["serve", "--help"]).output


def test_a_missing_serve_package_is_a_config_error_with_the_pip_command(monkeypatch):
    import builtins

    from defectmine.serve import require_serve_packages

    real_import = builtins.__import__

    def without_fastapi(name, *args, **kwargs):
        if name == "fastapi":
            raise ImportError("No module named 'fastapi'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_fastapi)
    with pytest.raises(ConfigError, match=r"pip install 'defectmine\[serve\]'"):
        require_serve_packages()
