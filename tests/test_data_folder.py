import numpy as np
import pytest
from PIL import Image

from defectmine.data import is_hidden, scan_folder, write_synthetic_folder
from defectmine.errors import DataError


def _png(path, value=128, size=(8, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size, value, np.uint8)).save(path)


def test_synthetic_folder_layout(synthetic_folder):
    records = scan_folder(synthetic_folder)
    normals = [r for r in records if not r.is_anomalous]
    anomalies = [r for r in records if r.is_anomalous]
    assert len(normals) == 24 and len(anomalies) == 8
    assert records[: len(normals)] == normals  # normals first
    assert {r.defect_class for r in anomalies} == {"scratch", "spot"}
    assert all(r.defect_class == "" and r.mask is None for r in normals)
    for r in anomalies:
        assert r.mask == synthetic_folder.resolve() / "masks" / r.path.relative_to(synthetic_folder.resolve())
        assert r.path.is_absolute() and r.mask.is_file()
    assert [r.path for r in normals] == sorted(r.path for r in normals)


def test_scan_is_deterministic(tmp_path):
    a = scan_folder(write_synthetic_folder(tmp_path / "a"))
    b = scan_folder(write_synthetic_folder(tmp_path / "a"))
    assert a == b


def test_suffixes_case_insensitive_nested_and_other_files_ignored(tmp_path):
    _png(tmp_path / "normal" / "x" / "A.PNG")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "normal" / "b.JpG", format="JPEG")
    (tmp_path / "normal" / "notes.txt").write_text("hi")
    _png(tmp_path / "normal" / ".ipynb_checkpoints" / "copy.png")
    _png(tmp_path / "anomalous" / "loose.png")
    _png(tmp_path / "anomalous" / "dent" / "deep" / "d.bmp")
    records = scan_folder(tmp_path)
    names = [r.path.name for r in records]
    assert names == ["b.JpG", "A.PNG", "loose.png", "d.bmp"]
    assert [r.defect_class for r in records] == ["", "", "anomalous", "dent"]


def test_normal_only_folder_is_fine(tmp_path):
    _png(tmp_path / "normal" / "a.png")
    assert len(scan_folder(tmp_path)) == 1


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match="nothere.*does not exist"):
        scan_folder(tmp_path / "nothere")


def test_missing_normal_explains_layout(tmp_path):
    _png(tmp_path / "good" / "a.png")
    with pytest.raises(DataError) as e:
        scan_folder(tmp_path)
    message = str(e.value)
    assert str(tmp_path) in message and "normal/" in message and "anomalous/<defect_class>" in message
    assert "good/" in message  # says what it found instead


def test_empty_class_folder_is_named(tmp_path):
    _png(tmp_path / "normal" / "a.png")
    _png(tmp_path / "anomalous" / "crack" / "c.png")
    (tmp_path / "anomalous" / "dent").mkdir()
    (tmp_path / "anomalous" / "dent" / "readme.txt").write_text("todo")
    with pytest.raises(DataError, match=r"anomalous/dent.*'dent' has no images"):
        scan_folder(tmp_path)


def test_normal_without_images(tmp_path):
    (tmp_path / "normal").mkdir()
    (tmp_path / "normal" / "a.txt").write_text("x")
    with pytest.raises(DataError, match="normal: no images"):
        scan_folder(tmp_path)


def test_empty_anomalous_folder(tmp_path):
    _png(tmp_path / "normal" / "a.png")
    (tmp_path / "anomalous").mkdir()
    with pytest.raises(DataError, match="anomalous: no images"):
        scan_folder(tmp_path)


def test_mask_without_image_is_named(tmp_path):
    _png(tmp_path / "normal" / "a.png")
    _png(tmp_path / "anomalous" / "crack" / "c.jpg")
    _png(tmp_path / "masks" / "anomalous" / "crack" / "c.png")
    _png(tmp_path / "masks" / "anomalous" / "crack" / "orphan.png")
    with pytest.raises(DataError, match=r"1 mask\(s\) under .*masks have no image:\n  - .*masks/anomalous/crack/orphan.png"):
        scan_folder(tmp_path)


def test_mask_with_other_suffix_maps_to_png(tmp_path):
    _png(tmp_path / "normal" / "a.png")
    _png(tmp_path / "anomalous" / "crack" / "c.jpg")
    _png(tmp_path / "masks" / "anomalous" / "crack" / "c.png")
    (crack,) = [r for r in scan_folder(tmp_path) if r.is_anomalous]
    assert crack.mask.name == "c.png"


@pytest.mark.parametrize(
    "path, hidden",
    [
        ("a.png", False),
        ("crack/a.png", False),
        ("._a.png", True),
        (".ipynb_checkpoints/a.png", True),
        ("crack/.cache/a.png", True),
        ("__MACOSX/crack/a.png", True),
        ("crack/__MACOSX/a.png", True),
        ("crack/__MACOSX_notes.png", False),
        ("my.part/a.png", False),
    ],
)
def test_is_hidden(path, hidden):
    assert is_hidden(path) is hidden


def test_hidden_files_and_macos_folders_are_ignored(tmp_path, caplog):
    _png(tmp_path / "normal" / "a.png")
    _png(tmp_path / "normal" / "._a.png")  # macOS resource fork beside the image
    _png(tmp_path / "normal" / "__MACOSX" / "b.png")
    _png(tmp_path / "__MACOSX" / "normal" / "c.png")  # unzipped archive metadata at the root
    _png(tmp_path / "anomalous" / "crack" / "c.png")
    _png(tmp_path / "anomalous" / "crack" / ".thumbs" / "c.png")
    _png(tmp_path / "anomalous" / "__MACOSX" / "crack" / "d.png")  # would become a class "__MACOSX"
    _png(tmp_path / "anomalous" / "._loose.png")
    _png(tmp_path / "masks" / "anomalous" / "crack" / "c.png")
    _png(tmp_path / "masks" / "__MACOSX" / "anomalous" / "crack" / "._c.png")  # not an orphan mask
    with caplog.at_level("WARNING"):
        records = scan_folder(tmp_path)
    assert [r.path.relative_to(tmp_path.resolve()).as_posix() for r in records] == [
        "normal/a.png",
        "anomalous/crack/c.png",
    ]
    assert records[1].mask is not None
    assert "__MACOSX" not in caplog.text  # not even "ignoring folder(s)": it is not data
