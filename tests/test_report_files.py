import csv
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from defectmine.errors import ConfigError
from defectmine.report import read_json, save_png, to_jsonable, write_json, write_scores_csv


@dataclass
class _WithToDict:
    a: float

    def to_dict(self):
        return {"a_doubled": self.a * 2}


@dataclass
class _Plain:
    p: Path
    x: float


def test_to_jsonable_numpy_nan_path_dataclass():
    obj = {
        "f": np.float32(0.5),
        "i": np.int64(3),
        "b": np.bool_(True),
        "nan": float("nan"),
        "inf": np.float64(np.inf),
        "arr": np.array([[1.0, np.nan], [np.inf, 2.0]]),
        "t": torch.tensor([1.5, float("nan")]),
        "path": Path("/tmp/x.png"),
        "dc": _WithToDict(1.5),
        "plain": _Plain(Path("a/b"), float("-inf")),
        "tuple": (1, np.int8(2)),
        3: "int key",
    }
    out = to_jsonable(obj)
    assert out == {
        "f": 0.5,
        "i": 3,
        "b": True,
        "nan": None,
        "inf": None,
        "arr": [[1.0, None], [None, 2.0]],
        "t": [1.5, None],
        "path": "/tmp/x.png",
        "dc": {"a_doubled": 3.0},
        "plain": {"p": "a/b", "x": None},
        "tuple": [1, 2],
        "3": "int key",
    }
    assert type(out["i"]) is int and type(out["f"]) is float and type(out["b"]) is bool
    json.dumps(out, allow_nan=False)  # strictly valid JSON


def test_to_jsonable_rejects_unknown_objects():
    with pytest.raises(ConfigError, match="object"):
        to_jsonable({"x": object()})


def test_write_and_read_json_round_trip_keeps_key_order(tmp_path):
    p = write_json(tmp_path / "sub" / "metrics.json", {"z": 1, "a": np.nan, "m": [np.float64(0.25)]})
    text = p.read_text(encoding="utf-8")
    assert text.index('"z"') < text.index('"a"') < text.index('"m"')
    assert "\n  " in text  # indent 2
    assert read_json(p) == {"z": 1, "a": None, "m": [0.25]}
    with pytest.raises(ConfigError, match="no such"):
        read_json(tmp_path / "missing.json")


def test_write_scores_csv_column_order_from_first_row(tmp_path):
    rows = [
        {"path": Path("b.png"), "score": np.float32(0.5), "label": "normal"},
        {"label": "anomalous", "score": float("nan"), "path": "a.png", "extra": 1},
    ]
    p = write_scores_csv(tmp_path / "scores.csv", rows)
    with p.open(newline="", encoding="utf-8") as f:
        got = list(csv.reader(f))
    assert got[0] == ["path", "score", "label", "extra"]
    assert got[1] == ["b.png", "0.5", "normal", ""]
    assert got[2] == ["a.png", "", "anomalous", "1"]


def test_save_png_writes_rgb_in_the_right_channel_order(tmp_path):
    img = np.zeros((4, 5, 3), np.uint8)
    img[..., 0] = 255  # pure red in RGB
    p = save_png(tmp_path / "deep" / "dir" / "red.png", img)
    back = cv2.imread(str(p), cv2.IMREAD_COLOR)  # BGR
    assert back.shape == (4, 5, 3)
    assert back[0, 0].tolist() == [0, 0, 255]
    with pytest.raises(ConfigError, match="uint8"):
        save_png(tmp_path / "f.png", img.astype(np.float32))
