import csv
import re
from collections import Counter

import numpy as np
import pytest

import defectmine.data.builtin as builtin
from defectmine.data import BUILTIN_SETS, ImageDataset, ImageSpec, Split, elpv, fixed_split, magnetic_tile
from defectmine.data.builtin import elpv_root, magnetic_tile_root, shared_dir
from defectmine.errors import ConfigError, DataError

# ---------------------------------------------------------------- locating shared/ (no real data needed)


def test_shared_dir_from_env(tmp_path, monkeypatch):
    (tmp_path / "splits").mkdir()
    monkeypatch.setenv("DEFECTMINE_SHARED", str(tmp_path))
    assert shared_dir() == tmp_path.resolve()


def test_shared_dir_env_without_splits(tmp_path, monkeypatch):
    monkeypatch.setenv("DEFECTMINE_SHARED", str(tmp_path))
    with pytest.raises(DataError, match="DEFECTMINE_SHARED=.*no splits/"):
        shared_dir()


def test_shared_dir_beside_a_clone(tmp_path, monkeypatch):
    (tmp_path / "ci" / "shared" / "splits").mkdir(parents=True)
    (tmp_path / "ci" / "clone" / "tests").mkdir(parents=True)
    monkeypatch.delenv("DEFECTMINE_SHARED", raising=False)
    monkeypatch.chdir(tmp_path / "ci" / "clone" / "tests")
    assert shared_dir() == (tmp_path / "ci" / "shared").resolve()


def test_shared_dir_not_found_says_how_to_set_it(tmp_path, monkeypatch):
    if any((folder / "shared" / "splits").is_dir() for folder in tmp_path.parents):
        pytest.skip("a shared/ folder sits above the temporary directory on this machine")
    monkeypatch.delenv("DEFECTMINE_SHARED", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(builtin, "__file__", str(tmp_path / "pkg" / "builtin.py"))
    with pytest.raises(DataError, match="set DEFECTMINE_SHARED="):
        shared_dir()


def test_elpv_root_from_env(tmp_path, monkeypatch):
    (tmp_path / "labels.csv").write_text("images/cell0001.png  1.0  mono\n")
    monkeypatch.setenv("DEFECTMINE_ELPV", str(tmp_path))
    assert elpv_root() == tmp_path.resolve()
    assert [r.defect_class for r in elpv()] == ["p3of3_mono"]


def test_elpv_root_env_without_labels(tmp_path, monkeypatch):
    monkeypatch.setenv("DEFECTMINE_ELPV", str(tmp_path))
    with pytest.raises(DataError, match="DEFECTMINE_ELPV=.*no labels.csv"):
        elpv_root()


def test_unknown_builtin_set():
    with pytest.raises(ConfigError, match="'mvtec'.*magnetic_tile, elpv"):
        fixed_split("mvtec")


def test_elpv_class_names():
    assert builtin.elpv_class(0.0, "mono") == ""
    assert builtin.elpv_class(1 / 3, "poly") == "p1of3_poly"
    assert builtin.elpv_class(2 / 3, "mono") == "p2of3_mono"
    assert builtin.elpv_class(1.0, "mono") == "p3of3_mono"


# ---------------------------------------------------------------- real data (fast: no bulk decoding)


def _readme_table() -> dict[str, dict[str, int]]:
    """The counts table of shared/splits/README.md, so the test follows the documentation."""
    table = {}
    for line in (shared_dir() / "splits" / "README.md").read_text().splitlines():
        m = re.match(r"\|\s*(\w+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\d+):(\d+)\s*\|\s*(\d+):(\d+)\s*\|", line)
        if m:
            n = [int(v) for v in m.groups()[1:]]
            table[m.group(1)] = dict(
                zip(["train", "train_anomalous", "val_normal", "val_anomalous", "test_normal", "test_anomalous"], n)
            )
    return table


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["magnetic_tile", "elpv"])
def test_fixed_split_matches_readme_and_file(name):
    table = _readme_table()
    records = fixed_split(name)
    assert Split.from_records(records).counts() == table[name]
    with (shared_dir() / "splits" / f"{name}.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(records) == len(rows)
    root = magnetic_tile_root() if name == "magnetic_tile" else elpv_root()
    for record, row in zip(records[:50] + records[-5:], rows[:50] + rows[-5:]):
        assert record.path.relative_to(root).as_posix() == row["path"]
        assert (record.label, record.defect_class, record.split) == (row["label"], row["defect_class"], row["split"])
        assert (record.mask.relative_to(root).as_posix() if record.mask else "") == row["mask"]
    # a re-derived split keeps the committed order
    assert Split.from_records(records).to_records() == records


@pytest.mark.realdata
def test_magnetic_tile_all_images():
    records = magnetic_tile()
    labels = Counter(r.label for r in records)
    assert labels == {"normal": 952, "anomalous": 392}
    classes = Counter(r.defect_class for r in records if r.is_anomalous)
    assert set(classes) == {"blowhole", "break", "crack", "fray", "uneven"} and sum(classes.values()) == 392
    assert all(r.mask is not None and r.mask.suffix == ".png" for r in records)
    fixed = {r.path: r for r in fixed_split("magnetic_tile")}
    assert set(fixed) == {r.path for r in records}
    assert all(fixed[r.path].with_split("") == r for r in records)
    assert BUILTIN_SETS["magnetic_tile"] is magnetic_tile


@pytest.mark.realdata
def test_magnetic_tile_few_images_load_with_masks():
    records = magnetic_tile()
    picks = [records[0], records[-1], next(r for r in records if not r.is_anomalous)]
    ds = ImageDataset(picks, ImageSpec(size=(64, 64), channels=1))
    assert ds.raw_images().shape == (3, 1, 64, 64)
    assert ds.masks()[:2].any(axis=(1, 2)).all() and not ds.masks()[2].any()


@pytest.mark.realdata
def test_elpv_all_images():
    pytest.importorskip("elpv_dataset")
    records = elpv()
    assert len(records) == 2624
    assert Counter(r.label for r in records) == {"normal": 1508, "anomalous": 1116}
    first = records[0]
    assert first.path.name == "cell0001.png" and first.path.is_file()
    assert first.meta == {"probability": 1.0, "cell_type": "mono"} and first.defect_class == "p3of3_mono"
    assert all(r.defect_class == "" for r in records if not r.is_anomalous)
    raw = ImageDataset(records[:2], ImageSpec(size=(300, 300), channels=1)).raw_images()
    assert raw.shape == (2, 1, 300, 300) and raw.float().std() > 0


@pytest.mark.realdata
def test_elpv_fixed_split_carries_meta():
    by_path = {r.path: r for r in elpv()}
    records = fixed_split("elpv")
    assert set(by_path) == {r.path for r in records}
    for r in records:
        assert r.meta == by_path[r.path].meta and r.defect_class == by_path[r.path].defect_class
    assert np.isclose(records[0].meta["probability"], 1.0)


@pytest.mark.realdata
def test_segmentation_splits_are_built_in():
    from defectmine.data import Split, fixed_split

    split = Split.from_records(fixed_split("magnetic_tile_seg_s0"))
    counts = split.counts()
    assert counts["train"] == 666 and counts["train_anomalous"] == 273
    assert (counts["val_normal"], counts["val_anomalous"]) == (96, 41)
    assert (counts["test_normal"], counts["test_anomalous"]) == (190, 78)
    assert all(r.mask is not None and r.mask.is_file() for r in split.train_anomalous)
