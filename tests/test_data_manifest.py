import pytest

from defectmine.data import read_manifest, scan_folder, write_manifest
from defectmine.errors import DataError


@pytest.fixture
def records(synthetic_folder):
    return scan_folder(synthetic_folder)


def _csv(path, text):
    path.write_text(text)
    return path


def test_round_trip_keeps_order_and_fields(records, synthetic_folder, tmp_path):
    shuffled = [r.with_split(s) for r, s in zip(records[::-1], ["train", "val", "test", "train_anomalous"] * 8)]
    csv_path = write_manifest(shuffled, tmp_path / "out" / "m.csv", synthetic_folder)
    text = csv_path.read_text().splitlines()
    assert text[0] == "path,label,defect_class,mask,split"
    assert text[1].startswith("anomalous/spot/spot_007.png,anomalous,spot,masks/anomalous/spot/spot_007.png,")
    assert read_manifest(csv_path, root=synthetic_folder) == shuffled


def test_default_root_is_csv_folder(records, synthetic_folder):
    csv_path = write_manifest(records, synthetic_folder / "all.csv")
    assert read_manifest(csv_path) == records


def test_any_column_order_and_optional_columns(synthetic_folder):
    csv_path = _csv(
        synthetic_folder / "m.csv",
        "label,path,operator\n"
        "anomalous,anomalous/spot/spot_001.png,ann\n"
        "normal, normal/normal_000.png ,bob\n",
    )
    a, n = read_manifest(csv_path)
    assert a.label == "anomalous" and a.defect_class == "anomalous" and a.mask is None and a.split == ""
    assert n.path == synthetic_folder.resolve() / "normal" / "normal_000.png"
    assert n.meta == {"operator": "bob"}


def test_absolute_paths(synthetic_folder, tmp_path):
    image = (synthetic_folder / "normal" / "normal_001.png").resolve()
    csv_path = _csv(tmp_path / "m.csv", f"path,label\n{image},normal\n")
    assert read_manifest(csv_path)[0].path == image


def test_missing_csv(tmp_path):
    with pytest.raises(DataError, match="m.csv: manifest not found"):
        read_manifest(tmp_path / "m.csv")


def test_missing_required_column_names_csv_and_column(synthetic_folder):
    csv_path = _csv(synthetic_folder / "m.csv", "path,split\nnormal/normal_000.png,train\n")
    with pytest.raises(DataError, match=r"m.csv, line 1 \(header\): missing column\(s\) label"):
        read_manifest(csv_path)


def test_unknown_label_names_row(synthetic_folder):
    csv_path = _csv(synthetic_folder / "m.csv", "path,label\nnormal/normal_000.png,normal\nnormal/normal_001.png,good\n")
    with pytest.raises(DataError, match=r"m.csv[\s\S]*line 3: unknown label 'good'[\s\S]*Fix"):
        read_manifest(csv_path)


def test_unknown_split_names_row(synthetic_folder):
    csv_path = _csv(synthetic_folder / "m.csv", "path,label,split\nnormal/normal_000.png,normal,training\n")
    with pytest.raises(DataError, match=r"m.csv[\s\S]*line 2: unknown split 'training'"):
        read_manifest(csv_path)


def test_missing_file_names_row_and_root(synthetic_folder):
    csv_path = _csv(synthetic_folder / "m.csv", "path,label,mask\nnormal/gone.png,normal,\nnormal/normal_000.png,normal,m.png\n")
    with pytest.raises(DataError) as e:
        read_manifest(csv_path)
    message = str(e.value)
    assert "m.csv: 2 problem(s)" in message and "line 2: file not found" in message and "gone.png" in message
    assert "line 3: mask not found" in message and str(synthetic_folder.resolve()) in message


def test_duplicate_path_names_both_rows(synthetic_folder):
    csv_path = _csv(
        synthetic_folder / "m.csv",
        "path,label\nnormal/normal_000.png,normal\nnormal/normal_001.png,normal\n./normal/normal_000.png,normal\n",
    )
    with pytest.raises(DataError, match=r"line 4: path ./normal/normal_000.png already listed on line 2"):
        read_manifest(csv_path)


def test_wrong_root_is_suggested(records, synthetic_folder, tmp_path):
    csv_path = write_manifest(records, synthetic_folder / "m.csv")
    with pytest.raises(DataError, match="40 problem.*[\\s\\S]*root folder is probably wrong"):
        read_manifest(csv_path, root=tmp_path)


def test_blank_lines_and_bom_are_tolerated(synthetic_folder):
    path = synthetic_folder / "m.csv"
    path.write_bytes("\ufeffpath,label\n\nnormal/normal_000.png,normal\n".encode("utf-8"))
    assert len(read_manifest(path)) == 1


def test_empty_csv(tmp_path):
    with pytest.raises(DataError, match="empty file"):
        read_manifest(_csv(tmp_path / "m.csv", ""))
