"""`defectmine export`: parity of every registered detector and segmenter, metadata, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from defectmine.cli import app
from defectmine.data.images import ImageSpec, normalise
from defectmine.errors import ConfigError, DataError
from defectmine.export import ExportedModel, export_model, load_exported
from defectmine.models.registry import DETECTORS, create
from defectmine.segment import SEGMENTERS, create_segmenter

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

SPEC = ImageSpec(size=(32, 32), channels=1)
# Small settings per registry entry; a new detector or segmenter adds its entry here.
TINY = {
    "fcdd": {"width": 8},
    "classifier": {"width": 8, "stride": 2},
    "liac": {"width": 8, "stride": 2},
    "segdec": {"width": 4},
    "draem": {"width": 4, "depth": 2},
    "vae_gradcam": {"width": 8, "blocks": 3, "anomaly_map": "residual"},
    "padim": {"n_features": 20},
    "unet": {"encoder": "cnn", "width": 8},
}
CLASSES = ("background", "bright", "dark")


def _calibrate(network: torch.nn.Module, spec: ImageSpec) -> None:
    """Batch-norm statistics of images instead of the init's (0, 1), as any fit leaves them: random init
    alone gives activations in the thousands, where float32 rounding, not the export, sets the error."""
    images = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (8, spec.channels, *spec.size), dtype=np.uint8))
    for module in network.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # a plain mean over the calibration batches
    network.train()
    with torch.no_grad():
        network(normalise(images, spec))
    network.eval()


def tiny_model(name: str, folder: Path, spec: ImageSpec = SPEC, **params) -> Path:
    """A saved, untrained (batch-norm calibrated) model of registry entry `name` in `folder`."""
    params = {**TINY[name], "device": "cpu", **params}
    if name in SEGMENTERS:
        model = create_segmenter(name, **params)
        model.spec_, model.classes_ = spec, CLASSES
        model.network_ = model._build_network(spec, len(CLASSES) - 1)
        model._set_state({"threshold": 0.5})
    else:
        model = create(name, **params)
        model.spec_, model.network_ = spec, model._build_network(spec)
        model._set_extra_state({})
    _calibrate(model.network_, spec)
    model.save(folder)
    return folder


def _pixels(n: int, spec: ImageSpec = SPEC, seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, spec.channels, *spec.size), dtype=np.uint8)


@pytest.mark.parametrize("format", ["onnx", "torchscript"])
@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_every_detector_exports_with_the_checkpoints_scores_and_maps(name, format, tmp_path):
    from defectmine.models.registry import load_detector

    folder = tiny_model(name, tmp_path / name)
    result = export_model(folder, format=format)
    assert result.path == folder / f"model.{'onnx' if format == 'onnx' else 'pt'}" and result.path.is_file()
    assert result.info.parity_max_abs_diff <= 1e-4
    pixels = _pixels(5)  # another batch size and other images than export's own check
    expected = load_detector(folder).score(torch.from_numpy(pixels))
    got = load_exported(result.path).score(pixels)
    assert got.maps.shape == (5, 32, 32)
    np.testing.assert_allclose(got.image, expected.image, atol=1e-4, rtol=0)
    np.testing.assert_allclose(got.maps, expected.maps, atol=1e-4, rtol=0)
    assert np.ptp(got.image) > 0  # the images are told apart: not a constant graph


@pytest.mark.parametrize("encoder", ["cnn", "resnet18"])
@pytest.mark.parametrize("name", sorted(SEGMENTERS))
def test_every_segmenter_exports_with_the_checkpoints_probabilities(name, encoder, tmp_path):
    from defectmine.segment import load_segmenter

    folder = tiny_model(name, tmp_path / name, encoder=encoder)
    result = export_model(folder)
    info = result.info
    assert info.kind == "segmenter" and info.classes == list(CLASSES) and info.pixel_threshold == 0.5
    assert info.threshold == 0.5 and "pixel threshold" in info.threshold_source  # a bare folder: as segment predict
    pixels = _pixels(4)
    expected = load_segmenter(folder).predict(torch.from_numpy(pixels))
    exported = load_exported(result.path)
    got = exported.predict(pixels)
    assert got.classes == CLASSES
    np.testing.assert_allclose(got.probabilities, expected.probabilities, atol=1e-4, rtol=0)
    scores, expected_scores = exported.score(pixels), expected.anomaly_scores("max")
    np.testing.assert_allclose(scores.image, expected_scores.image, atol=1e-4, rtol=0)
    np.testing.assert_allclose(scores.maps, expected_scores.maps, atol=1e-4, rtol=0)


def test_metadata_holds_kind_config_spec_threshold_and_outputs(tmp_path):
    folder = tiny_model("fcdd", tmp_path / "bare")
    path = export_model(folder, tmp_path / "out" / "fcdd.onnx").path
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    saved = json.loads((folder / "config.json").read_text())
    assert props["defectmine.kind"] == "detector" and props["defectmine.name"] == "fcdd"
    assert props["defectmine.version"] == saved["defectmine_version"]
    assert json.loads(props["defectmine.config"]) == saved["config"]
    assert ImageSpec.from_dict(json.loads(props["defectmine.image_spec"])) == SPEC
    assert json.loads(props["defectmine.threshold"]) is None and "bare model folder" in props["defectmine.threshold_source"]
    assert [o["name"] for o in json.loads(props["defectmine.outputs"])] == ["score", "map"]
    assert props["defectmine.maps"] == "maps: native; gradcam not exported (needs gradients)"
    graph = onnx.load(str(path)).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"  # any batch size


def test_a_graph_that_disagrees_with_the_checkpoint_is_not_written(tmp_path, monkeypatch):
    from defectmine.export import build

    folder = tiny_model("fcdd", tmp_path / "bare")
    monkeypatch.setattr(build, "PARITY_TOLERANCE", -1.0)  # any difference, even 0, is too large
    with pytest.raises(DataError, match="differs from the checkpoint .* nothing was written"):
        export_model(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]


def test_bad_sources_formats_and_outputs_are_one_clear_error(tmp_path):
    folder = tiny_model("fcdd", tmp_path / "bare")
    with pytest.raises(ConfigError, match="--format 'tflite' is unknown.*onnx, torchscript"):
        export_model(folder, format="tflite")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither a run folder .* nor a saved model folder"):
        export_model(tmp_path / "empty")
    with pytest.raises(DataError, match="no such model folder"):
        export_model(tmp_path / "missing")
    with pytest.raises(ConfigError, match="must end in .onnx"):
        export_model(folder, tmp_path / "model.pt")
    export_model(folder)
    with pytest.raises(ConfigError, match="exists.*--overwrite"):
        export_model(folder)
    assert export_model(folder, overwrite=True).path.is_file()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's own exporter, for a foreign file
def test_files_that_are_not_our_exports_are_refused(tmp_path):
    good = export_model(tiny_model("fcdd", tmp_path / "bare")).path
    text = tmp_path / "notes.onnx"
    text.write_text("not a model")
    with pytest.raises(DataError, match="notes.onnx: not a readable ONNX model"):
        load_exported(text)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated.onnx: not a readable ONNX model"):
        load_exported(truncated)
    foreign = tmp_path / "foreign.onnx"
    torch.onnx.export(torch.nn.Conv2d(1, 1, 3), (torch.zeros(1, 1, 8, 8),), str(foreign), dynamo=False)
    with pytest.raises(DataError, match="foreign.onnx: no defectmine metadata .*exported by something else"):
        load_exported(foreign)
    with pytest.raises(DataError, match="not an exported model"):
        load_exported(tmp_path / "bare" / "config.json")
    with pytest.raises(DataError, match="no such file"):
        load_exported(tmp_path / "gone.onnx")
    with pytest.raises(DataError, match=r"uint8 pixels of shape \(N, 1, 32, 32\)"):
        load_exported(good).score(np.zeros((2, 3, 32, 32), np.uint8))


def test_cli_export_reports_parity_and_refuses_an_unknown_format(tmp_path):
    folder = tiny_model("fcdd", tmp_path / "bare")
    result = CliRunner().invoke(app, ["export", str(folder), "--format", "onnx"])
    assert result.exit_code == 0, result.output
    assert "exported detector fcdd" in result.output and "parity: max |exported - checkpoint|" in result.output
    assert isinstance(load_exported(folder / "model.onnx"), ExportedModel)
    bad = CliRunner().invoke(app, ["export", str(folder), "--format", "tflite"])
    assert bad.exit_code == 2 and "--format 'tflite' is unknown" in bad.output and "Traceback" not in bad.output


def test_attention_maps_that_need_gradients_export_the_score_only(tmp_path):
    from defectmine.export import load_exported
    from defectmine.models.registry import load_detector

    folder = tiny_model("vae_gradcam", tmp_path / "vae", anomaly_map="attention")
    result = export_model(folder)
    exported = load_exported(result.path)
    assert exported.info.score_only and "needs gradients" in exported.info.maps
    pixels = _pixels(3)
    scores = exported.score(pixels)
    assert scores.maps is None
    reference = load_detector(folder).score(torch.from_numpy(pixels), maps=False).image
    np.testing.assert_allclose(scores.image, reference, atol=1e-4)
