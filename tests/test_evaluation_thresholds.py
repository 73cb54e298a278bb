import json

import numpy as np
import pytest
from sklearn.metrics import f1_score

from defectmine.errors import ConfigError
from defectmine.evaluation import (
    THRESHOLD_RULES,
    Threshold,
    choose_threshold,
    fixed_threshold,
    max_f1_threshold,
    mean_std_threshold,
)


def brute_force_best_f1(labels, scores):
    return max(f1_score(labels, scores >= t, zero_division=0) for t in np.unique(scores))


def test_max_f1_hand_computed_with_ties():
    # t=0.9: F1 0.5; t=0.5 (three tied scores, one normal): P 3/4, R 1 -> F1 6/7; t=0.2: F1 0.75.
    labels = [0, 1, 1, 0, 1]
    scores = [0.5, 0.5, 0.9, 0.2, 0.5]
    thr = max_f1_threshold(labels, scores)
    assert thr.rule == "max_f1"
    assert thr.value == pytest.approx(0.35)  # midway between the chosen 0.5 and the next lower score, 0.2
    assert thr.params["f1"] == pytest.approx(6 / 7)
    assert thr.params["precision"] == pytest.approx(0.75)
    assert thr.params["recall"] == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(5))
def test_max_f1_matches_brute_force_on_tied_scores(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 60)
    # Few distinct values so that many scores tie; anomalies score higher on average.
    scores = rng.integers(0, 6, 60) + 2 * labels
    thr = max_f1_threshold(labels, scores)
    achieved = f1_score(labels, scores >= thr.value)
    assert achieved == pytest.approx(brute_force_best_f1(labels, scores))
    assert achieved == pytest.approx(thr.params["f1"])
    assert thr.value not in set(scores.tolist()) or thr.value == scores.min()


def test_max_f1_leaves_a_gap_on_both_sides_of_the_threshold():
    # A max-F1 threshold on a score lets float rounding (ONNX vs torch) flip that image; the midpoint
    # keeps every validation decision and leaves room both ways.
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = rng.normal(size=200).astype(np.float32) + labels
    thr = max_f1_threshold(labels, scores)
    chosen = scores[scores >= thr.value].min()
    below = scores[scores < thr.value].max()
    assert below < thr.value < chosen and thr.value == pytest.approx((below + chosen) / 2)
    wobble = 1e-4 * (chosen - below)
    for shifted in (scores + wobble, scores - wobble):
        assert f1_score(labels, shifted >= thr.value) == pytest.approx(thr.params["f1"])


def test_max_f1_on_the_lowest_score_keeps_that_score():
    thr = max_f1_threshold([1, 1, 1], [0.2, 0.5, 0.9])  # every image anomalous: nothing lies below
    assert thr.value == 0.2 and thr.params["recall"] == 1.0


def test_max_f1_prefers_lowest_of_equal_thresholds():
    # t=0.9: P 1, R 1/2; t=0.6: P 1/2, R 1 -> both F1 = 2/3 (0.8 and 0.7 are worse); the lower one
    # (higher recall) is kept.
    labels = np.array([1, 0, 0, 1])
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    assert f1_score(labels, scores >= 0.9) == pytest.approx(2 / 3)
    assert f1_score(labels, scores >= 0.6) == pytest.approx(2 / 3)
    thr = max_f1_threshold(labels, scores)
    assert thr.value == 0.6 and thr.params["f1"] == pytest.approx(2 / 3)  # nothing below 0.6: kept as is


def test_max_f1_without_positives_points_to_mean_std():
    with pytest.raises(ConfigError, match="mean_std"):
        max_f1_threshold([0, 0, 0], [0.1, 0.2, 0.3])


def test_mean_std_formula_uses_normals_only():
    labels = np.array([0, 0, 0, 0, 1])
    scores = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    thr = mean_std_threshold(labels, scores, k=2.0)
    std = np.std([1.0, 2.0, 3.0, 4.0], ddof=1)
    assert thr.rule == "mean_std"
    assert thr.value == pytest.approx(2.5 + 2.0 * std)
    assert thr.params == pytest.approx({"k": 2.0, "mean": 2.5, "std": std, "n_normal": 4})


def test_mean_std_without_labels_treats_all_as_normal():
    thr = mean_std_threshold(None, [1.0, 3.0], k=1.0)
    assert thr.value == pytest.approx(2.0 + np.sqrt(2.0))


def test_mean_std_without_normals_raises():
    with pytest.raises(ConfigError, match="normal"):
        mean_std_threshold([1, 1], [0.3, 0.4])


def test_fixed_threshold_and_float_conversion():
    thr = fixed_threshold(np.float32(0.25))
    assert thr == Threshold("fixed", 0.25, {})
    assert type(thr.value) is float
    assert float(thr) == 0.25


def test_threshold_round_trips_through_json():
    thr = mean_std_threshold([0, 0, 1], [0.1, 0.3, 0.9], k=3.0)
    back = Threshold.from_dict(json.loads(json.dumps(thr.to_dict())))
    assert back == thr


def test_threshold_from_dict_missing_value():
    with pytest.raises(ConfigError, match="value"):
        Threshold.from_dict({"rule": "fixed"})


def test_threshold_rejects_non_finite_value():
    with pytest.raises(ConfigError, match="finite"):
        Threshold("fixed", float("nan"))


def test_choose_threshold_dispatches_each_rule():
    labels = [0, 0, 1, 1]
    scores = [0.1, 0.4, 0.35, 0.8]
    assert set(THRESHOLD_RULES) == {"max_f1", "mean_std", "fixed"}
    assert choose_threshold("max_f1", labels, scores) == max_f1_threshold(labels, scores)
    assert choose_threshold("mean_std", labels, scores, k=1.5) == mean_std_threshold(labels, scores, k=1.5)
    assert choose_threshold("fixed", labels, scores, value=0.3) == fixed_threshold(0.3)
    assert choose_threshold("fixed", value=0.3).value == 0.3


def test_choose_threshold_unknown_rule_lists_known_rules():
    with pytest.raises(ConfigError, match="max_f1.*mean_std") as err:
        choose_threshold("otsu", [0, 1], [0.1, 0.9])
    assert "fixed" in str(err.value)


def test_choose_threshold_rejects_unknown_parameter():
    with pytest.raises(ConfigError, match="'k'"):
        choose_threshold("mean_std", [0, 1], [0.1, 0.9], kk=2)


def test_choose_threshold_missing_fixed_value():
    with pytest.raises(ConfigError, match="value"):
        choose_threshold("fixed")


def test_max_f1_length_mismatch():
    with pytest.raises(ConfigError, match="3 entries but scores has 2"):
        max_f1_threshold([0, 1, 1], [0.1, 0.2])
