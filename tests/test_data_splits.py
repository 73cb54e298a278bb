from collections import Counter
from pathlib import Path

import pytest

from defectmine.data import (
    POSITIVE_RATIOS,
    Record,
    Split,
    make_split,
    parse_ratio,
    positive_ratio_subset,
    scan_folder,
    take_k,
)
from defectmine.errors import ConfigError, DataError


def _records(n_normal=100, classes=(("a", 30), ("b", 20), ("c", 10))):
    """Records with made-up paths: splitting never touches the files."""
    normals = [Record(path=Path(f"/data/normal/{i:04d}.png"), label="normal") for i in range(n_normal)]
    anomalies = [
        Record(path=Path(f"/data/anomalous/{c}/{i:04d}.png"), label="anomalous", defect_class=c)
        for c, n in classes
        for i in range(n)
    ]
    return normals + anomalies


def _paths(records):
    return [r.path for r in records]


def test_counts_follow_protocol():
    split = make_split(_records(), n_train_anomalous=12)
    assert split.counts() == {
        "train": 60,
        "train_anomalous": 12,
        "val_normal": 20,
        "val_anomalous": 24,
        "test_normal": 20,
        "test_anomalous": 24,
    }
    assert all(not r.is_anomalous for r in split.train) and split.normal_train == split.train
    assert all(r.is_anomalous for r in split.train_anomalous)
    for part in ("train", "train_anomalous", "val", "test"):
        assert {r.split for r in getattr(split, part)} == {part}


def test_rounding_matches_the_committed_splits():
    # 952 normals (Magnetic Tile) → 571/191/190; 1508 (ELPV) → 905/301/302, as in splits/README.md
    for n, expected in ((952, (571, 191, 190)), (1508, (905, 301, 302))):
        c = make_split(_records(n_normal=n), n_train_anomalous=0).counts()
        assert (c["train"], c["val_normal"], c["test_normal"]) == expected


def test_parts_do_not_overlap_and_cover_everything():
    records = _records()
    split = make_split(records, n_train_anomalous=12)
    parts = [split.train, split.train_anomalous, split.val, split.test]
    all_paths = [p for part in parts for p in _paths(part)]
    assert len(all_paths) == len(set(all_paths)) == len(records)
    assert set(all_paths) == set(_paths(records))


def test_deterministic_per_seed_and_independent_of_input_order():
    records = _records()
    a = make_split(records, seed=3, n_train_anomalous=12)
    b = make_split(records[::-1], seed=3, n_train_anomalous=12)
    assert a == b
    c = make_split(records, seed=4, n_train_anomalous=12)
    assert _paths(a.train) != _paths(c.train) and _paths(a.train_anomalous) != _paths(c.train_anomalous)


def test_reserved_anomalies_stratified_in_every_prefix():
    split = make_split(_records(), n_train_anomalous=12)
    classes = [r.defect_class for r in split.train_anomalous]
    assert Counter(classes) == {"a": 6, "b": 4, "c": 2}
    share = {"a": 0.5, "b": 1 / 3, "c": 1 / 6}
    for k in range(1, 13):
        counts = Counter(classes[:k])
        for c, s in share.items():
            assert abs(counts[c] - k * s) < 1, (k, counts)


def test_val_test_stratified_by_class():
    split = make_split(_records(classes=(("a", 31), ("b", 21), ("c", 11))), n_train_anomalous=3)
    val = Counter(r.defect_class for r in split.val if r.is_anomalous)
    test = Counter(r.defect_class for r in split.test if r.is_anomalous)
    for c in "abc":
        assert abs(val[c] - test[c]) <= 1
    assert abs(sum(val.values()) - sum(test.values())) <= 1


def test_train_anomalous_order_matches_committed_rule():
    # Magnetic Tile's class sizes: the committed file starts blowhole, uneven, break, crack, blowhole, uneven, fray
    sizes = (("blowhole", 115), ("break", 85), ("crack", 57), ("fray", 32), ("uneven", 103))
    split = make_split(_records(classes=sizes), n_train_anomalous=80)
    classes = [r.defect_class for r in split.train_anomalous]
    assert classes[:8] == ["blowhole", "uneven", "break", "crack", "blowhole", "uneven", "fray", "break"]
    assert Counter(classes) == {"blowhole": 23, "break": 17, "crack": 12, "fray": 7, "uneven": 21}


def test_synthetic_folder_split(synthetic_folder):
    split = make_split(scan_folder(synthetic_folder), n_train_anomalous=2)
    assert split.counts() == {
        "train": 14, "train_anomalous": 2, "val_normal": 5, "val_anomalous": 3, "test_normal": 5, "test_anomalous": 3,
    }
    assert {r.defect_class for r in split.train_anomalous} == {"scratch", "spot"}


def test_split_errors():
    normals_only = _records(classes=())
    with pytest.raises(DataError, match="no normal images"):
        make_split(_records(n_normal=0), n_train_anomalous=2)
    with pytest.raises(DataError, match=r"0 anomalous image\(s\).*n_train_anomalous <= 0"):
        make_split(normals_only, n_train_anomalous=80)
    with pytest.raises(DataError, match=r"60 anomalous.*n_train_anomalous <= 58"):
        make_split(_records(), n_train_anomalous=80)
    with pytest.raises(ConfigError, match="ratios"):
        make_split(_records(), ratios=(0.5, 0.2, 0.2), n_train_anomalous=2)
    with pytest.raises(ConfigError, match="n_train_anomalous"):
        make_split(_records(), n_train_anomalous=-1)


def test_records_round_trip():
    split = make_split(_records(), n_train_anomalous=12)
    records = split.to_records()
    assert len(records) == 160 and records[:12] == split.train_anomalous
    assert Split.from_records(records) == split


def test_from_records_rejects_unsplit():
    with pytest.raises(DataError, match=r"/data/normal/0000.png: split ''[\s\S]*make_split"):
        Split.from_records(_records()[:3])


def test_take_k():
    split = make_split(_records(), n_train_anomalous=12)
    five = take_k(split, 5)
    assert five.train_anomalous == split.train_anomalous[:5]
    assert five.train == split.train and five.val == split.val and five.test == split.test
    assert take_k(split, 0).train_anomalous == []
    with pytest.raises(DataError, match="asked for 13 .* reserves only 12"):
        take_k(split, 13)
    with pytest.raises(ConfigError):
        take_k(split, -1)


# ---------------------------------------------------------------- positive ratios


@pytest.mark.parametrize(
    "text, value",
    [("1/16", 1 / 16), ("1:4", 0.25), (" 0.5 ", 0.5), ("2", 2.0), (0.125, 0.125), ("unsupervised", None), ("1e-2", 0.01)],
)
def test_parse_ratio(text, value):
    assert parse_ratio(text) == value


@pytest.mark.parametrize("junk", ["", "half", "1/0", "-1/4", "0", "1/2/3", float("nan"), True, None])
def test_parse_ratio_rejects_junk(junk):
    with pytest.raises(ConfigError, match="positive ratio"):
        parse_ratio(junk)


def test_all_standard_ratios_parse():
    assert [parse_ratio(r) for r in POSITIVE_RATIOS] == [1 / 2**i for i in range(8)] + [None]


def test_positive_ratio_subset_sizes_and_stratification():
    records = _records(n_normal=40, classes=(("a", 30), ("b", 10)))
    normal = [r for r in records if not r.is_anomalous]
    anomalous = [r for r in records if r.is_anomalous]
    subset = positive_ratio_subset(normal, anomalous, "1/2", seed=0)
    assert subset[:40] == normal
    chosen = subset[40:]
    assert len(chosen) == 20 and Counter(r.defect_class for r in chosen) == {"a": 15, "b": 5}
    assert len(positive_ratio_subset(normal, anomalous, 1 / 128, seed=0)) == 41  # at least one anomaly
    assert len(positive_ratio_subset(normal, anomalous, "unsupervised", seed=0)) == 41
    assert len(positive_ratio_subset(normal, anomalous, None, seed=0)) == 41
    assert len(positive_ratio_subset(normal, anomalous, 0.1, seed=0)) == 44


def test_positive_ratio_subsets_are_nested_and_seeded():
    records = _records(n_normal=64)
    normal = [r for r in records if not r.is_anomalous]
    anomalous = [r for r in records if r.is_anomalous]
    small = set(positive_ratio_subset(normal, anomalous, "1/8", seed=1))
    large = set(positive_ratio_subset(normal, anomalous, "1/2", seed=1))
    assert small < large
    again = positive_ratio_subset(normal, anomalous, "1/2", seed=1)
    other = positive_ratio_subset(normal, anomalous, "1/2", seed=2)
    assert again == positive_ratio_subset(normal, anomalous[::-1], "1/2", seed=1)
    assert again != other


def test_positive_ratio_errors():
    records = _records(n_normal=40, classes=(("a", 5),))
    normal = [r for r in records if not r.is_anomalous]
    anomalous = [r for r in records if r.is_anomalous]
    with pytest.raises(DataError, match=r"needs 40 anomalous images, but only 5 .* ratio <= 5/40"):
        positive_ratio_subset(normal, anomalous, "1/1", seed=0)
    with pytest.raises(DataError, match="wrong label"):
        positive_ratio_subset(anomalous, normal, "1/8", seed=0)
    with pytest.raises(DataError, match="no normal images"):
        positive_ratio_subset([], anomalous, "1/8", seed=0)
    with pytest.raises(ConfigError):
        positive_ratio_subset(normal, anomalous, "lots", seed=0)
