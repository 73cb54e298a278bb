import json
import warnings

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from defectmine.errors import ConfigError
from defectmine.evaluation import (
    Threshold,
    UndefinedMetricWarning,
    image_metrics,
    pr_points,
    roc_points,
)


def test_hand_computed_small_case():
    # Pairs (normal, anomaly) ranked correctly: (0.1,0.35) (0.1,0.8) (0.4,0.8); wrong: (0.4,0.35).
    m = image_metrics([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], threshold=0.5)
    assert m["auroc"] == pytest.approx(0.75)
    # Ranking 0.8(+) 0.4(-) 0.35(+): AP = 0.5 * 1 + 0.5 * 2/3.
    assert m["auprc"] == pytest.approx(0.5 + 1 / 3)
    assert m["confusion_matrix"] == {"tn": 2, "fp": 0, "fn": 1, "tp": 1}
    assert m["precision"] == 1.0
    assert m["recall"] == 0.5
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["accuracy"] == 0.75
    assert (m["n"], m["n_anomalous"], m["threshold"]) == (4, 2, 0.5)


def test_threshold_is_inclusive():
    m = image_metrics([0, 1], [0.2, 0.5], threshold=0.5)
    assert m["confusion_matrix"]["tp"] == 1


@pytest.mark.parametrize("seed", range(4))
def test_matches_sklearn_on_random_data(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(200) < 0.2
    scores = rng.normal(size=200) + labels
    threshold = 0.7
    m = image_metrics(labels.astype(int), scores, threshold)
    pred = scores >= threshold
    assert m["auroc"] == pytest.approx(roc_auc_score(labels, scores))
    assert m["auprc"] == pytest.approx(average_precision_score(labels, scores))
    assert m["f1"] == pytest.approx(f1_score(labels, pred))
    assert m["precision"] == pytest.approx(precision_score(labels, pred))
    assert m["recall"] == pytest.approx(recall_score(labels, pred))
    assert m["accuracy"] == pytest.approx(accuracy_score(labels, pred))
    tn, fp, fn, tp = confusion_matrix(labels, pred).ravel()
    assert m["confusion_matrix"] == {"tn": tn, "fp": fp, "fn": fn, "tp": tp}


def test_result_is_json_ready_plain_python():
    m = image_metrics(np.array([0, 1, 1]), np.array([0.1, 0.7, 0.2], dtype=np.float32), np.float64(0.5))
    json.dumps(m)
    flat = [v for k, v in m.items() if k != "confusion_matrix"] + list(m["confusion_matrix"].values())
    assert all(type(v) in (int, float) for v in flat)


def test_all_scores_tied_gives_chance_auroc():
    m = image_metrics([0, 1, 0, 1, 1], [0.3] * 5, threshold=0.3)
    assert m["auroc"] == 0.5
    assert m["confusion_matrix"] == {"tn": 0, "fp": 2, "fn": 0, "tp": 3}


@pytest.mark.parametrize("label, kind", [(0, "normal"), (1, "anomalous")])
def test_one_class_gives_none_and_warns(label, kind):
    with pytest.warns(UndefinedMetricWarning, match=f"All 3 images are {kind}"):
        m = image_metrics([label] * 3, [0.1, 0.5, 0.9], threshold=0.4)
    assert m["auroc"] is None and m["auprc"] is None
    assert m["n_anomalous"] == 3 * label
    json.dumps(m)  # None, not NaN


def test_no_predicted_positive_gives_zero_precision_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = image_metrics([0, 1, 1], [0.1, 0.2, 0.3], threshold=0.9)
    assert m["precision"] == 0.0 and m["f1"] == 0.0 and m["recall"] == 0.0


def test_accepts_threshold_object():
    m = image_metrics([0, 1], [0.2, 0.6], Threshold("fixed", 0.5))
    assert m["threshold"] == 0.5 and m["accuracy"] == 1.0


def test_nan_scores_are_counted():
    with pytest.raises(ConfigError, match="2 NaN"):
        image_metrics([0, 1, 1], [np.nan, 0.2, np.nan], 0.5)


def test_length_mismatch():
    with pytest.raises(ConfigError, match="labels has 2 entries but scores has 3"):
        image_metrics([0, 1], [0.1, 0.2, 0.3], 0.5)


def test_two_dimensional_scores_rejected():
    with pytest.raises(ConfigError, match="1-D"):
        image_metrics([0, 1], [[0.1], [0.2]], 0.5)


def test_non_binary_labels_rejected():
    with pytest.raises(ConfigError, match="only 0"):
        image_metrics([0, 2], [0.1, 0.2], 0.5)


def test_non_finite_threshold_rejected():
    with pytest.raises(ConfigError, match="finite"):
        image_metrics([0, 1], [0.1, 0.2], float("nan"))


def test_curves_match_auroc_and_endpoints():
    labels = [0, 0, 1, 1]
    scores = [0.1, 0.4, 0.35, 0.8]
    fpr, tpr, _ = roc_points(labels, scores)
    assert np.trapezoid(tpr, fpr) == pytest.approx(0.75)
    precision, recall, thresholds = pr_points(labels, scores)
    assert len(precision) == len(recall) == len(thresholds) + 1
    assert recall[0] == 1.0 and recall[-1] == 0.0


def test_curves_refuse_one_class():
    with pytest.raises(ConfigError, match="both normal and anomalous"):
        roc_points([0, 0], [0.1, 0.2])
    with pytest.raises(ConfigError, match="both normal and anomalous"):
        pr_points([1, 1], [0.1, 0.2])


def test_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8], requires_grad=True)
    m = image_metrics(torch.tensor([0, 0, 1, 1]), scores, torch.tensor(0.5))
    assert m["auroc"] == pytest.approx(0.75)
