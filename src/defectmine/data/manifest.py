"""CSV manifests: one row per image with its label, and optionally split, defect class and mask."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from defectmine.errors import DataError
from defectmine.data._messages import listing
from defectmine.data.records import ANOMALOUS, LABELS, SPLITS, Record

REQUIRED_COLUMNS = ("path", "label")
OPTIONAL_COLUMNS = ("split", "defect_class", "mask")
WRITE_COLUMNS = ("path", "label", "defect_class", "mask", "split")
KNOWN_SPLITS = tuple(s for s in SPLITS if s)


def _resolve(value: str, root: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else root / path


def read_manifest(csv_path: Path | str, root: Path | str | None = None) -> list[Record]:
    """Records from a CSV with columns `path,label[,split,defect_class,mask]` (any order), in row order.

    Paths are relative to `root` (default: the CSV's folder) unless absolute. `label` is "normal" or
    "anomalous"; `split` one of train, train_anomalous, val, test (or empty); anomalous rows without a
    defect_class get the class "anomalous". Other columns are kept as strings in `Record.meta`.
    Every row is checked (files exist, labels and splits known, no path twice) and all problems are
    reported in one DataError that names the CSV and the line numbers.
    """
    csv_path = Path(csv_path).expanduser()
    if not csv_path.is_file():
        raise DataError(
            f"{csv_path}: manifest not found. Fix: pass the path of a CSV file with columns "
            "path,label (and optionally split,defect_class,mask)."
        )
    root = (Path(root).expanduser() if root is not None else csv_path.parent).resolve()
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(_read_rows(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{csv_path}: not a readable UTF-8 CSV file ({e}). Fix: save it as UTF-8 CSV.") from None
    if not rows:
        raise DataError(f"{csv_path}: empty file. Fix: add a header line 'path,label' and one row per image.")
    _, header = rows[0]
    columns = [c.strip().lower() for c in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DataError(
            f"{csv_path}, line 1 (header): missing column(s) {', '.join(missing)}; "
            f"found {', '.join(columns) or 'none'}. "
            "Fix: the header must name at least 'path' and 'label' (optional: split, defect_class, mask)."
        )
    repeated = sorted({c for c in columns if c and columns.count(c) > 1})
    if repeated:
        raise DataError(
            f"{csv_path}, line 1 (header): column(s) {', '.join(repeated)} appear twice. Fix: keep one of each."
        )
    extra = [c for c in columns if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS and c]

    records: list[Record] = []
    problems: list[str] = []
    first_line: dict[Path, int] = {}
    for line, row in rows[1:]:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > len(columns):
            problems.append(
                f"line {line}: {len(row)} fields but the header has {len(columns)} (quote values with commas)"
            )
            continue
        values = {c: v.strip() for c, v in zip(columns, row + [""] * (len(columns) - len(row)))}
        record, row_problems = _row_record(values, extra, root)
        problems += [f"line {line}: {p}" for p in row_problems]
        if record is None:
            continue
        key = Path(os.path.normpath(record.path))
        if key in first_line:
            problems.append(
                f"line {line}: path {values['path']} already listed on line {first_line[key]} (list each image once)"
            )
            continue
        first_line[key] = line
        records.append(record)
    if problems:
        n_rows = sum(1 for _, row in rows[1:] if any(cell.strip() for cell in row))
        none_found = sum("file not found" in p for p in problems) == n_rows
        hint = f"No listed image exists under {root}: the root folder is probably wrong.\n" if none_found else ""
        raise DataError(
            f"{csv_path}: {len(problems)} problem(s) (paths are relative to {root}):\n{listing(problems)}\n{hint}"
            f"Fix: correct these rows of {csv_path}, or pass the right root folder for its paths."
        )
    return records


def _read_rows(f):
    reader = csv.reader(f)
    for row in reader:
        yield reader.line_num, row


def _row_record(values: dict[str, str], extra: list[str], root: Path) -> tuple[Record | None, list[str]]:
    problems = []
    label = values["label"].lower()
    if label not in LABELS:
        problems.append(f"unknown label {values['label']!r} (use {' or '.join(LABELS)})")
    split = values.get("split", "").lower()
    if split not in SPLITS:
        problems.append(f"unknown split {values.get('split')!r} (use {', '.join(KNOWN_SPLITS)} or leave empty)")
    if not values["path"]:
        problems.append("empty path")
        return None, problems
    path = _resolve(values["path"], root)
    if not path.is_file():
        problems.append(f"file not found: {path}")
    mask = _resolve(values["mask"], root) if values.get("mask") else None
    if mask is not None and not mask.is_file():
        problems.append(f"mask not found: {mask}")
    if problems:
        return None, problems
    defect_class = values.get("defect_class", "")
    if label == ANOMALOUS and not defect_class:
        defect_class = ANOMALOUS
    meta = {c: values[c] for c in extra}
    return Record(path=path, label=label, defect_class=defect_class, mask=mask, split=split, meta=meta), []


def _relative(path: Path, root: Path) -> str:
    if not path.is_absolute():
        return path.as_posix()
    try:
        return Path(os.path.relpath(path, root)).as_posix()
    except ValueError:  # another drive on Windows: no relative path exists
        return path.as_posix()


def write_manifest(records: list[Record], csv_path: Path | str, root: Path | str | None = None) -> Path:
    """Write records as a CSV (columns path,label,defect_class,mask,split) that `read_manifest` reads back.

    Paths are written relative to `root` (default: the CSV's folder). Returns the CSV path.
    """
    csv_path = Path(csv_path).expanduser()
    root = (Path(root).expanduser() if root is not None else csv_path.parent).resolve()
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(WRITE_COLUMNS)
        for r in records:
            mask = _relative(Path(r.mask), root) if r.mask is not None else ""
            writer.writerow([_relative(Path(r.path), root), r.label, r.defect_class, mask, r.split])
    return csv_path
