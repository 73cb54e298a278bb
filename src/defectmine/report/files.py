"""Run-directory files: JSON, scores CSV and PNG images."""

from __future__ import annotations

import csv
import dataclasses
import datetime
import enum
import json
import math
from collections.abc import Mapping
from pathlib import Path, PurePath

import cv2
import numpy as np

from defectmine.errors import ConfigError


def to_jsonable(obj):
    """Convert ``obj`` recursively into plain JSON types.

    - numpy scalars and arrays, torch tensors → Python numbers / nested lists
    - NaN and ±inf → ``None`` (JSON has no NaN; ``null`` reads back as "undefined")
    - paths → strings; enums → their value; dates → ISO strings
    - objects with a ``to_dict()`` method (our dataclasses) → that dict; other dataclasses →
      ``dataclasses.asdict``
    - mappings → dicts with string keys; lists, tuples and sets → lists

    Raises:
        ConfigError: an object of any other type (say which field holds it).
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, np.bool_):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if hasattr(obj, "detach") and hasattr(obj, "tolist"):  # torch.Tensor, without importing torch
        return to_jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value)
    if isinstance(obj, (datetime.date, datetime.time)):
        return obj.isoformat()
    if callable(getattr(obj, "to_dict", None)):
        return to_jsonable(obj.to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(to_jsonable(k)): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        items = [to_jsonable(v) for v in obj]
        try:
            return sorted(items)  # sets have no order; sort so files are reproducible
        except TypeError:
            return items
    raise ConfigError(
        f"cannot write an object of type {type(obj).__name__} to JSON; convert it to numbers, "
        "strings, lists or dicts first (or give its class a to_dict() method)."
    )


def write_json(path, obj) -> Path:
    """Write ``to_jsonable(obj)`` as indented UTF-8 JSON (keys in insertion order); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(to_jsonable(obj), indent=2, sort_keys=False, ensure_ascii=False, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def read_json(path):
    """Read a JSON file written by ``write_json`` (or any UTF-8 JSON)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such JSON file; check the run directory.") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e}); was it written completely?") from None


def _csv_cell(value):
    v = to_jsonable(value)
    if v is None:
        return ""
    if isinstance(v, (list, dict)):
        return json.dumps(v, ensure_ascii=False)
    return v


def write_scores_csv(path, rows: list[dict]) -> Path:
    """Write one row per image; returns the path.

    Columns come in the order of the first row's keys; keys first seen in later rows are appended
    after them, in order of appearance, and missing cells are left empty (as are NaN/None). Lists
    and dicts are written as JSON. With no rows the file is empty.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns: dict[str, None] = {}
    for row in rows:
        for key in row:
            columns.setdefault(str(key), None)
    with path.open("w", encoding="utf-8", newline="") as f:
        if not rows:
            return path
        writer = csv.DictWriter(f, fieldnames=list(columns), restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({str(k): _csv_cell(v) for k, v in row.items()})
    return path


def encode_png(image_uint8: np.ndarray) -> bytes:
    """PNG bytes of a ``uint8`` ``(H, W)`` or ``(H, W, 3)`` RGB image."""
    img = np.asarray(image_uint8)
    if img.dtype != np.uint8:
        raise ConfigError(f"PNG images must be uint8, got {img.dtype}; use explain.as_rgb_uint8 first.")
    if img.ndim == 3 and img.shape[-1] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    elif not (img.ndim == 2 or (img.ndim == 3 and img.shape[-1] == 1)):
        raise ConfigError(f"PNG images must be (H, W) or (H, W, 3), got shape {img.shape}.")
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise ConfigError(f"could not encode an image of shape {img.shape} as PNG.")
    return buf.tobytes()


def save_png(path, image_uint8: np.ndarray) -> Path:
    """Save a ``uint8`` RGB (or gray) image as PNG, creating parent folders; returns the path."""
    path = Path(path)
    data = encode_png(image_uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Bytes through Python rather than cv2.imwrite: imwrite fails silently on non-ASCII paths
    # on some platforms and picks the format from the suffix.
    path.write_bytes(data)
    return path
