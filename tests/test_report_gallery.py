"""Report galleries: worst false positives / negatives at the threshold, ground-truth masks beside the
heatmaps, and the files skipped while decoding."""

import re
from dataclasses import replace

import numpy as np
import pytest

from defectmine.errors import ConfigError
from defectmine.report import ReportImage, mask_outline, render_report, side_by_side, tile_image, worst_errors
from defectmine.report.gallery import MASK_COLOR


def _section(html, heading_start):
    """The HTML from the <h2> starting with `heading_start` to the next <h2> (or the end)."""
    for part in re.split(r"(?=<h2)", html):
        if re.match(rf"<h2[^>]*>{re.escape(heading_start)}", part):
            return part
    raise AssertionError(f"no section {heading_start!r} in the report")


def _tile(name, score, label="normal", group="normal", mask=None):
    overlay = np.full((8, 10, 3), 90, np.uint8)
    return ReportImage(name=name, overlay=overlay, score=score, label=label, group=group, mask=mask,
                       image=None if mask is None else np.full((8, 10, 3), 30, np.uint8))


# -- selection --------------------------------------------------------------------------------------
def test_worst_errors_at_the_threshold_ranked_from_worst():
    labels = [0, 0, 0, 0, 1, 1, 1, 1, 0]
    scores = [0.9, 0.5, 0.2, 0.7, 0.1, 0.49, 0.8, 0.3, float("nan")]
    fp, fn = worst_errors(labels, scores, 0.5, n=10)
    assert fp.tolist() == [0, 3, 1]  # normal at or above 0.5 (0.5 itself counts), highest first
    assert fn.tolist() == [4, 7, 5]  # anomalous below 0.5, lowest first; 0.8 is a true positive
    fp, fn = worst_errors(labels, scores, 0.5, n=2)
    assert fp.tolist() == [0, 3] and fn.tolist() == [4, 7]
    fp, fn = worst_errors([0, 1], [0.1, 0.9], 0.5, n=5)
    assert fp.size == 0 and fn.size == 0


def test_worst_errors_ties_keep_the_data_order_and_bad_input_raises():
    fp, _ = worst_errors([0, 0, 0], [0.6, 0.8, 0.6], 0.5, n=3)
    assert fp.tolist() == [1, 0, 2]
    with pytest.raises(ConfigError, match="threshold"):
        worst_errors([0, 1], [0.1, 0.9], None, n=3)
    with pytest.raises(ConfigError, match="threshold"):
        worst_errors([0, 1], [0.1, 0.9], float("nan"), n=3)
    with pytest.raises(ConfigError, match="2 labels and 3 scores"):
        worst_errors([0, 1], [0.1, 0.9, 0.3], 0.5, n=3)


# -- drawing ----------------------------------------------------------------------------------------
def test_mask_outline_draws_the_boundary_only():
    image = np.zeros((7, 7, 3), np.uint8)
    mask = np.zeros((7, 7), bool)
    mask[2:5, 2:5] = True
    out = mask_outline(image, mask)
    coloured = (out == MASK_COLOR).all(axis=-1)
    ring = mask.copy()
    ring[3, 3] = False
    assert (coloured == ring).all()
    assert image.sum() == 0  # the input is not drawn on
    # at the image edge the mask's own edge is its boundary
    edge = mask_outline(image, np.ones((7, 7), bool))
    assert (edge[0] == MASK_COLOR).all() and (edge[3, 3] == 0).all()
    # a mask of another size is resized to the image
    assert (mask_outline(np.zeros((14, 14, 3), np.uint8), mask) == MASK_COLOR).all(axis=-1).sum() > ring.sum()
    with pytest.raises(ConfigError):
        mask_outline(np.zeros((7, 7), np.uint8), mask)


def test_tiles_put_the_ground_truth_beside_the_heatmap_when_there_is_a_mask():
    mask = np.zeros((8, 10), bool)
    mask[2:6, 3:8] = True
    with_mask = tile_image(_tile("a.png", 1.0, mask=mask))
    assert with_mask.shape == (8, 10 + 2 + 10, 3)
    assert (with_mask[:, :10] == 90).all()  # the heatmap panel as it was
    right = with_mask[:, 12:]
    assert (right == MASK_COLOR).all(axis=-1).sum() == 14  # the outline of a 4x5 box
    assert (right[4, 5] == 30).all()  # the plain image inside it
    assert tile_image(_tile("b.png", 1.0)).shape == (8, 10, 3)
    assert side_by_side(np.zeros((3, 4, 3), np.uint8), np.zeros((3, 5, 3), np.uint8), gap=1).shape == (3, 10, 3)
    with pytest.raises(ConfigError, match="heights"):
        side_by_side(np.zeros((3, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8))


# -- the report page --------------------------------------------------------------------------------
def _render(**over):
    kw = dict(
        title="t", metrics={"auroc": 0.8}, threshold={"rule": "max_f1", "value": 0.5},
        labels=[0, 0, 0, 1, 1], scores=[0.9, 0.6, 0.1, 0.2, 0.8],
        groups=["normal", "normal", "normal", "crack", "spot"], top_images=[], config={},
    )  # fmt: skip
    kw.update(over)
    return render_report(**kw)


def test_error_galleries_have_titles_counts_and_masks():
    mask = np.ones((8, 10), bool)
    html = _render(
        false_positives=[_tile("fp_<1>.png", 0.9)],
        false_negatives=[_tile("fn_1.png", 0.2, "anomalous", "crack", mask=mask)],
    )
    fp = _section(html, "Worst false positives")
    assert fp.startswith("<h2>Worst false positives (1 of 2)</h2>")  # one shown of the two in the set
    assert "fp_&lt;1&gt;.png" in fp and "at or above the threshold 0.5000" in fp
    assert fp.count('<img class="tile"') == 1 and "ground truth" not in fp
    fn = _section(html, "Worst false negatives")
    assert fn.startswith("<h2>Worst false negatives (1)</h2>") and "fn_1.png" in fn and "crack" in fn
    assert 'class="anomalous pair"' in fn and "heatmap | ground truth" in fn
    order = [html.index(h) for h in ("Top images", "Worst false positives", "Worst false negatives", "Configuration")]
    assert order == sorted(order)


def test_error_galleries_say_none_and_are_left_out_when_not_given():
    html = _render(scores=[0.1, 0.2, 0.3, 0.7, 0.8], false_positives=[], false_negatives=[])
    assert "<h2>Worst false positives: none</h2>" in html
    assert "None: no normal images scoring at or above the threshold 0.5000." in html
    assert "<h2>Worst false negatives: none</h2>" in html
    assert "None: no anomalous images scoring below the threshold 0.5000." in html
    assert "Worst false" not in _render()


def test_skipped_files_are_listed_when_there_are_any():
    skipped = [{"path": "/data/normal/<bad>.png", "reason": "not a PNG"}, {"path": "/d/x.jpg", "reason": "empty"}]
    html = _render(skipped_files=skipped)
    section = _section(html, "Skipped files")
    assert section.startswith('<h2 id="skipped-files">Skipped files (2)</h2>')
    assert "/data/normal/&lt;bad&gt;.png" in section and "not a PNG" in section and "/d/x.jpg" in section
    assert '2 file(s) could not be decoded' in html.split("<h2")[0]  # said under the title, too
    assert "Skipped files" not in _render(skipped_files=[]) and "Skipped files" not in _render()


def test_run_report_shows_the_worst_errors_with_masks_and_skipped_files(tmp_path):
    from defectmine.data import ImageDataset, ImageSpec
    from defectmine.models.base import Scores
    from defectmine.report.run import write_run_report

    n = 8
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    masks = np.zeros((n, 16, 16), bool)
    masks[4:, 4:12, 4:12] = True
    images = np.full((n, 1, 16, 16), 100, np.uint8)
    dataset = ImageDataset.from_tensor(images, ImageSpec(size=(16, 16), channels=1), labels=labels, masks=masks)
    # only the anomalous images have a mask file; the normal ones have none
    dataset.records = [r if r.is_anomalous else replace(r, mask=None) for r in dataset.records]
    scores = Scores(image=np.array([0.1, 0.95, 0.2, 0.7, 0.9, 0.3, 0.05, 0.8]), maps=np.random.rand(n, 16, 16))
    metrics = {"threshold": {"rule": "fixed", "value": 0.5}, "test": {"auroc": 0.7},
               "skipped_files": [{"path": "/imgs/broken.png", "reason": "cannot decode"}]}
    path = write_run_report(tmp_path / "report.html", title="run", document={"run": {}}, metrics=metrics,
                            dataset=dataset, scores=scores, n_images=3, n_errors=1)
    html = path.read_text(encoding="utf-8")
    assert html.count('<img class="tile"') == 3 + 1 + 1
    fp = _section(html, "Worst false positives")
    assert fp.startswith("<h2>Worst false positives (1 of 2)</h2>")
    assert "<figcaption>1<br>" in fp and "pair" not in fp  # image 1 (0.95), no mask file
    fn = _section(html, "Worst false negatives")
    assert fn.startswith("<h2>Worst false negatives (1 of 2)</h2>")
    assert "<figcaption>6<br>" in fn and "heatmap | ground truth" in fn  # image 6 (0.05), its mask beside
    assert "/imgs/broken.png" in _section(html, "Skipped files")
