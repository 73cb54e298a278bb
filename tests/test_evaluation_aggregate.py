import json

import numpy as np
import pytest

from defectmine.errors import ConfigError
from defectmine.evaluation import aggregate, format_mean_std


def test_mean_and_sample_std():
    out = aggregate([{"auroc": 0.90}, {"auroc": 0.92}, {"auroc": 0.97}])
    assert out["auroc"]["mean"] == pytest.approx(0.93)
    assert out["auroc"]["std"] == pytest.approx(np.std([0.90, 0.92, 0.97], ddof=1))
    assert out["auroc"]["n"] == 3 and out["auroc"]["n_missing"] == 0


def test_nested_dicts_and_non_numeric_values():
    runs = [
        {"f1": 0.5, "confusion_matrix": {"tp": 1, "fp": 3}, "rule": "max_f1", "pixel_subsampled": True},
        {"f1": 0.7, "confusion_matrix": {"tp": 3, "fp": 1}, "rule": "max_f1", "pixel_subsampled": False},
    ]
    out = aggregate(runs)
    assert set(out) == {"f1", "confusion_matrix"}
    assert out["confusion_matrix"]["tp"]["mean"] == 2.0
    assert out["confusion_matrix"]["fp"]["std"] == pytest.approx(np.sqrt(2))
    json.dumps(out)


def test_none_is_skipped_and_counted():
    out = aggregate([{"auroc": None}, {"auroc": 0.8}, {"auroc": 0.6}, {"auroc": float("nan")}])
    assert out["auroc"] == pytest.approx({"mean": 0.7, "std": np.std([0.8, 0.6], ddof=1), "n": 2, "n_missing": 2})


def test_all_none():
    assert aggregate([{"auroc": None}, {"auroc": None}])["auroc"] == {
        "mean": None,
        "std": None,
        "n": 0,
        "n_missing": 2,
    }


def test_single_value_has_zero_std():
    assert aggregate([{"a": 3}])["a"] == {"mean": 3.0, "std": 0.0, "n": 1, "n_missing": 0}


def test_key_missing_from_one_run_is_left_out():
    out = aggregate([{"a": 1.0, "b": 2.0}, {"a": 3.0}])
    assert set(out) == {"a"}


def test_numpy_scalars_are_numbers():
    out = aggregate([{"a": np.float32(1.0)}, {"a": np.int64(3)}])
    assert out["a"]["mean"] == 2.0 and type(out["a"]["mean"]) is float


@pytest.mark.parametrize("runs", [[], {"auroc": 0.9}, [{"a": 1}, 0.5]])
def test_bad_input_rejected(runs):
    with pytest.raises(ConfigError, match="aggregate"):
        aggregate(runs)


def test_format_mean_std():
    assert format_mean_std({"mean": 0.91234, "std": 0.0041, "n": 3}) == "0.912 ± 0.004"
    assert format_mean_std({"mean": 0.91234, "std": 0.0041, "n": 3}, digits=2) == "0.91 ± 0.00"
    assert format_mean_std({"mean": 0.5, "std": 0.0, "n": 1}) == "0.500"
    assert format_mean_std({"mean": None, "std": None, "n": 0}) == "n/a"


def test_format_mean_std_rejects_non_stats():
    with pytest.raises(ConfigError, match="mean"):
        format_mean_std(0.9)
