"""Report plots. Each function takes plain arrays and returns one PNG as bytes.

Figures are built with ``matplotlib.figure.Figure`` and the Agg canvas directly: no pyplot, no
global state, no display needed.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from defectmine.errors import ConfigError

_DPI = 100
_SIZE = (4.8, 3.6)
_NORMAL_COLOR = "#4c72b0"
_GROUP_COLORS = ["#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c",
                 "#ccb974", "#64b5cd"]  # fmt: skip


def _new_figure(size=_SIZE):
    fig = Figure(figsize=size, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return buf.getvalue()


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True,
            fontsize=9, color="#555555")  # fmt: skip


def binary_labels(labels) -> np.ndarray:
    """Labels as a 0/1 int array: accepts 0/1, bools, or the strings "normal"/"anomalous"."""
    arr = np.asarray(labels)
    if arr.dtype.kind in "USO":
        mapping = {"normal": 0, "anomalous": 1}
        bad = sorted({str(a) for a in arr.ravel()} - set(mapping))
        if bad:
            raise ConfigError(f"labels must be 0/1 or 'normal'/'anomalous', got {bad[:5]}.")
        return np.array([mapping[str(a)] for a in arr.ravel()], dtype=int)
    arr = arr.astype(float).ravel()
    if not np.isin(arr, (0.0, 1.0)).all():
        raise ConfigError(
            f"labels must be 0 (normal) or 1 (anomalous), got values {np.unique(arr)[:5].tolist()}."
        )
    return arr.astype(int)


def _labels_scores(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    y = binary_labels(labels)
    s = np.asarray(scores, dtype=float).ravel()
    if y.shape != s.shape:
        raise ConfigError(f"got {y.size} labels but {s.size} scores; pass one score per label.")
    if not np.isfinite(s).all():
        raise ConfigError("scores contain NaN or inf; check the detector output.")
    return y, s


def roc_curve_png(labels, scores) -> bytes:
    """ROC curve with the AUROC in the legend; a note instead of a curve when only one class is present."""
    from sklearn.metrics import roc_auc_score, roc_curve

    y, s = _labels_scores(labels, scores)
    fig, ax = _new_figure()
    ax.plot([0, 1], [0, 1], ls=":", color="#999999", lw=1)
    if len(np.unique(y)) < 2:
        _note(ax, "ROC undefined: the labels hold only one class")
    else:
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, color=_NORMAL_COLOR, lw=1.8, label=f"AUROC = {roc_auc_score(y, s):.4f}")
        ax.legend(loc="lower right")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false positive rate", ylabel="true positive rate",
           title="ROC")  # fmt: skip
    return _png(fig)


def pr_curve_png(labels, scores) -> bytes:
    """Precision-recall curve with the AP and the positive rate (chance level) in the legend."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    y, s = _labels_scores(labels, scores)
    fig, ax = _new_figure()
    if y.sum() == 0 or y.sum() == y.size:
        _note(ax, "PR curve undefined: the labels hold only one class")
    else:
        prec, rec, _ = precision_recall_curve(y, s)
        ap = average_precision_score(y, s)
        ax.step(rec, prec, where="post", color=_NORMAL_COLOR, lw=1.8, label=f"AP = {ap:.4f}")
        base = y.mean()
        ax.axhline(base, ls=":", color="#999999", lw=1, label=f"chance = {base:.3f}")
        ax.legend(loc="lower left")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title="Precision-recall")
    return _png(fig)


def _ordered_groups(groups: Sequence[str]) -> list[str]:
    seen = list(dict.fromkeys(groups))
    return (["normal"] if "normal" in seen else []) + [g for g in seen if g != "normal"]


def score_histogram_png(scores, groups: list[str], threshold: float | None = None) -> bytes:
    """Overlaid score histograms, one per group (e.g. "normal", "crack", "spot"), and the threshold.

    Anomaly scores are long-tailed: when every score is positive and the max/min ratio exceeds
    20, the bins are log-spaced on a log x-axis; otherwise they are linear. The count axis turns
    logarithmic when the largest group is 10 times the smallest, so rare defect classes stay
    visible next to thousands of normals. Non-finite scores are left out.
    """
    s = np.asarray(scores, dtype=float).ravel()
    g = np.asarray([str(x) for x in groups])
    if g.shape != s.shape:
        raise ConfigError(f"got {s.size} scores but {g.size} groups; pass one group name per score.")
    keep = np.isfinite(s)
    s, g = s[keep], g[keep]
    fig, ax = _new_figure((5.6, 3.6))
    if s.size == 0:
        _note(ax, "no finite scores")
        return _png(fig)
    lo, hi = float(s.min()), float(s.max())
    n_bins = int(np.clip(2 * math.sqrt(s.size), 10, 60))
    if lo > 0 and hi / lo > 20:
        bins = np.geomspace(lo, hi, n_bins + 1)
        ax.set_xscale("log")
    else:
        bins = np.linspace(lo, hi if hi > lo else lo + 1.0, n_bins + 1)
    names = _ordered_groups(g.tolist())
    sizes = [int((g == name).sum()) for name in names]
    others = iter(_GROUP_COLORS * (1 + len(names) // len(_GROUP_COLORS)))
    for name, n in zip(names, sizes):
        color = _NORMAL_COLOR if name == "normal" else next(others)
        vals = s[g == name]
        ax.hist(vals, bins=bins, histtype="stepfilled", alpha=0.25, color=color)
        ax.hist(vals, bins=bins, histtype="step", lw=1.5, color=color, label=f"{name} (n={n})")
    if max(sizes) >= 10 * min(sizes):
        ax.set_yscale("log")
    if threshold is not None and math.isfinite(float(threshold)):
        ax.axvline(float(threshold), color="black", ls="--", lw=1.2, label=f"threshold = {float(threshold):.4g}")
    ax.set(xlabel="anomaly score", ylabel="images", title="Score distribution by group")
    ax.legend(fontsize=8, loc="best")
    return _png(fig)


def confusion_matrix_png(cm: Mapping) -> bytes:
    """2x2 confusion matrix from a dict with ``tn``, ``fp``, ``fn``, ``tp`` counts (rows: true class)."""
    missing = [k for k in ("tn", "fp", "fn", "tp") if k not in cm]
    if missing:
        raise ConfigError(f"confusion matrix dict lacks {missing}; it needs tn, fp, fn and tp counts.")
    m = np.array([[cm["tn"], cm["fp"]], [cm["fn"], cm["tp"]]], dtype=float)
    fig, ax = _new_figure((3.8, 3.4))
    row_tot = m.sum(axis=1, keepdims=True)
    frac = np.divide(m, row_tot, out=np.zeros_like(m), where=row_tot > 0)
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(2):
        for j in range(2):
            ax.text(j, i, f"{int(m[i, j])}\n{100 * frac[i, j]:.1f}%", ha="center", va="center",
                    color="white" if frac[i, j] > 0.6 else "black", fontsize=11)  # fmt: skip
    ax.set_xticks([0, 1], ["normal", "anomalous"])
    ax.set_yticks([0, 1], ["normal", "anomalous"])
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix")
    return _png(fig)


def curve_png(
    x,
    ys: Mapping[str, tuple],
    xlabel: str,
    ylabel: str,
    log2_x: bool = False,
    shade: list[tuple[float, float, str]] | None = None,
    *,
    title: str | None = None,
) -> bytes:
    """Line plot of several series with ±std bands and optional labelled, shaded x-ranges.

    Args:
        x: shared x values.
        ys: series name → ``(mean, std)``, each of ``len(x)``; ``std`` may be None (no band).
        log2_x: base-2 log x-axis (for ratio sweeps 1/2, 1/4, ...).
        shade: ``(x0, x1, label)`` spans drawn behind the lines, e.g. the "mining opportunity"
            and "over-mining" phases of a sweep.
    """
    xv = np.asarray(x, dtype=float).ravel()
    fig, ax = _new_figure((5.6, 3.6))
    colors = iter([_NORMAL_COLOR, *_GROUP_COLORS] * (1 + len(ys) // 10))
    span_colors = iter(["#2ca02c", "#d62728", "#9467bd", "#8c564b"] * (1 + len(shade or []) // 4))
    for x0, x1, label in shade or []:
        color = next(span_colors)
        ax.axvspan(float(x0), float(x1), color=color, alpha=0.10, lw=0)
        ax.text((float(x0) * float(x1)) ** 0.5 if log2_x and x0 > 0 and x1 > 0 else (x0 + x1) / 2,
                0.98, str(label), transform=ax.get_xaxis_transform(), ha="center", va="top",
                fontsize=8, color=color)  # fmt: skip
    for name, series in ys.items():
        mean, std = series if isinstance(series, tuple) else (series, None)
        mean = np.asarray(mean, dtype=float).ravel()
        if mean.shape != xv.shape:
            raise ConfigError(f"curve_png: series {name!r} has {mean.size} values for {xv.size} x values.")
        color = next(colors)
        ax.plot(xv, mean, marker="o", ms=3, lw=1.6, color=color, label=str(name))
        if std is not None:
            sd = np.asarray(std, dtype=float).ravel()
            if sd.shape != xv.shape:
                raise ConfigError(f"curve_png: std of {name!r} has {sd.size} values for {xv.size} x values.")
            ax.fill_between(xv, mean - sd, mean + sd, color=color, alpha=0.2, lw=0)
    if log2_x:
        if (xv <= 0).any():
            raise ConfigError("curve_png: log2_x needs positive x values.")
        ax.set_xscale("log", base=2)
        # Ticks at the swept values (5, 10, 20, ...) read better than powers of two.
        ax.set_xticks(xv, [f"{v:g}" for v in xv])
        ax.minorticks_off()
    ax.set(xlabel=xlabel, ylabel=ylabel)
    if title:
        ax.set_title(title)
    if ys:
        ax.legend(fontsize=8, loc="best")
    return _png(fig)
