import re

import numpy as np
import pytest

from defectmine.errors import ConfigError
from defectmine.report import (
    ReportImage,
    confusion_matrix_png,
    curve_png,
    pr_curve_png,
    render_report,
    roc_curve_png,
    score_histogram_png,
    write_report,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _data(n_normal=12, n_anom=6, seed=0):
    rng = np.random.default_rng(seed)
    labels = [0] * n_normal + [1] * n_anom
    scores = np.concatenate([rng.gamma(2.0, 1.0, n_normal), rng.gamma(2.0, 1.0, n_anom) + 4.0])
    groups = ["normal"] * n_normal + ["crack", "spot"] * (n_anom // 2)
    return labels, scores, groups


def _images(names):
    return [
        ReportImage(name=n, overlay=np.full((16, 20, 3), 40 * k, np.uint8), score=10.0 - k,
                    label="anomalous", group="crack")  # fmt: skip
        for k, n in enumerate(names)
    ]


def _is_png(b):
    return isinstance(b, bytes) and b.startswith(PNG_SIGNATURE) and len(b) > 1000


def test_every_plot_returns_png_bytes():
    labels, scores, groups = _data()
    assert _is_png(roc_curve_png(labels, scores))
    assert _is_png(pr_curve_png(labels, scores))
    assert _is_png(score_histogram_png(scores, groups, threshold=3.0))
    assert _is_png(score_histogram_png(scores, groups, threshold=None))
    assert _is_png(score_histogram_png(np.geomspace(1e-3, 1e3, 40), ["normal"] * 40, 1.0))
    assert _is_png(confusion_matrix_png({"tn": 10, "fp": 2, "fn": 1, "tp": 5}))
    x = [1 / 64, 1 / 32, 1 / 16, 1 / 8]
    png = curve_png(
        x,
        {"auroc": ([0.7, 0.8, 0.9, 0.85], [0.02, 0.03, 0.01, 0.02]), "ap": ([0.3, 0.4, 0.5, 0.45], None)},
        "anomalous ratio",
        "score",
        log2_x=True,
        shade=[(1 / 64, 1 / 16, "mining opportunity"), (1 / 16, 1 / 8, "over-mining")],
    )
    assert _is_png(png)
    # one-class labels draw a note instead of failing
    assert _is_png(roc_curve_png([0, 0, 0], [0.1, 0.2, 0.3]))
    assert _is_png(pr_curve_png([0, 0, 0], [0.1, 0.2, 0.3]))


def test_plot_inputs_are_validated():
    with pytest.raises(ConfigError):
        roc_curve_png([0, 1, 2], [0.1, 0.2, 0.3])
    with pytest.raises(ConfigError):
        pr_curve_png([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ConfigError, match="tp"):
        confusion_matrix_png({"tn": 1, "fp": 1, "fn": 1})
    with pytest.raises(ConfigError):
        score_histogram_png([1.0, 2.0], ["normal"], None)
    with pytest.raises(ConfigError):
        curve_png([1, 2], {"a": ([1.0], None)}, "x", "y")


def _render(**over):
    labels, scores, groups = _data()
    kw = dict(
        title="Run <A> & B",
        metrics={"auroc": 0.9731, "ap": 0.8125, "f1": 0.7},
        threshold={"rule": "max_f1_on_val", "value": 4.25},
        labels=labels,
        scores=scores,
        groups=groups,
        top_images=_images(["img_001.png", "<script>alert(1)</script>.png", "img_003.png"]),
        config={"detector": "fcdd", "seed": 7, "lr": 1e-4},
    )
    kw.update(over)
    return render_report(**kw)


def test_render_report_contents():
    html = _render(pixel_metrics={"pixel_auroc": 0.9512, "pro": float("nan")})
    assert html.startswith("<!DOCTYPE html>")
    for text in ("0.9731", "0.8125", "0.7000", "max_f1_on_val", "4.2500", "0.9512", "pixel_auroc"):
        assert text in html
    assert html.count('<img class="tile" src="data:image/png;base64,') == 3
    # ROC, PR, histogram and confusion matrix plots are embedded too
    assert html.count('<img class="plot" src="data:image/png;base64,') == 4
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.png" in html
    assert "Run &lt;A&gt; &amp; B" in html
    # config as JSON in a <details>/<pre>
    m = re.search(r"<details>.*?<pre>(.*?)</pre>.*?</details>", html, re.S)
    assert m and "&quot;detector&quot;: &quot;fcdd&quot;" in m.group(1) and "&quot;seed&quot;: 7" in m.group(1)
    # pixel NaN shown as n/a; nothing external
    assert "n/a" in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html)
    assert "<link" not in html and "@import" not in html
    assert "Pixel metrics" in html


def test_render_report_one_class_labels_does_not_crash():
    n = 10
    html = _render(
        metrics={"auroc": None, "ap": None},
        labels=[0] * n,
        scores=np.linspace(0.0, 1.0, n),
        groups=["normal"] * n,
        top_images=_images(["a.png"]),
    )
    assert "n/a" in html
    assert "ROC and PR curves need both" in html
    assert "Pixel metrics" not in html  # none given
    assert 'alt="ROC curve"' not in html
    assert html.count('<img class="tile"') == 1


def test_confusion_matrix_counts_from_threshold_when_not_given(monkeypatch):
    import defectmine.report.html as report_html

    seen = {}
    monkeypatch.setattr(report_html, "confusion_matrix_png", lambda cm: seen.update(cm) or b"png")
    render_report(
        title="t", metrics={}, threshold={"rule": "fixed", "value": 0.5},
        labels=[0, 0, 1, 1, 1], scores=[0.1, 0.6, 0.4, 0.5, 0.9],
        groups=["normal", "normal", "crack", "crack", "spot"], top_images=[], config={},
    )  # fmt: skip
    assert seen == {"tn": 1, "fp": 1, "fn": 1, "tp": 2}


def test_threshold_object_with_to_dict_and_metrics_confusion_matrix(monkeypatch):
    import defectmine.report.html as report_html

    class FakeThreshold:
        def to_dict(self):
            return {"rule": "mean_std", "value": 2.5, "params": {"k": 3.0}}

    seen = {}
    monkeypatch.setattr(report_html, "confusion_matrix_png", lambda cm: seen.update(cm) or b"png")
    html = render_report(
        title="t", metrics={"auroc": 1.0, "confusion_matrix": {"tn": 7, "fp": 0, "fn": 0, "tp": 9}},
        threshold=FakeThreshold(), labels=[0, 1], scores=[0.0, 5.0], groups=["normal", "spot"],
        top_images=[], config={},
    )  # fmt: skip
    assert seen == {"tn": 7, "fp": 0, "fn": 0, "tp": 9}
    assert "mean_std" in html and "2.5000" in html and "threshold params.k" in html


def test_extra_sections_are_appended_and_length_mismatch_raises():
    html = _render(extra_sections=[("Sweep <ratio>", "<table><tr><td>sweep-cell</td></tr></table>")])
    assert "<h2>Sweep &lt;ratio&gt;</h2>" in html
    assert html.index("sweep-cell") > html.index("config.json")
    with pytest.raises(ConfigError, match="one of each"):
        _render(groups=["normal"])


def test_write_report_writes_utf8_file(tmp_path):
    labels, scores, groups = _data()
    p = write_report(
        tmp_path / "run" / "report.html",
        title="Prüfbericht", metrics={"auroc": 0.9}, threshold={"rule": "r", "value": 4.0},
        labels=labels, scores=scores, groups=groups, top_images=_images(["x"]), config={},
    )  # fmt: skip
    text = p.read_text(encoding="utf-8")
    assert "Prüfbericht" in text and text.rstrip().endswith("</html>")
