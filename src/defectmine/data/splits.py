"""Seeded, deterministic splits and anomaly subsampling over lists of records.

Every function here is pure: the same records and seed give the same result on every machine
(input order does not matter; records are sorted by path before any random draw).
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from defectmine.errors import ConfigError, DataError
from defectmine.data._messages import listing
from defectmine.data.dataset import check_records
from defectmine.data.records import Record

PARTS = ("train", "train_anomalous", "val", "test")
POSITIVE_RATIOS = ["1/1", "1/2", "1/4", "1/8", "1/16", "1/32", "1/64", "1/128", "unsupervised"]
UNSUPERVISED = "unsupervised"


def _round_half_up(x: float) -> int:
    # Python's round() rounds halves to even; a protocol should not depend on that subtlety.
    return int(math.floor(x + 0.5 + 1e-9))


def _by_path(records: list[Record]) -> list[Record]:
    return sorted(records, key=lambda r: str(r.path))


@dataclass
class Split:
    """A benchmark split. `train` holds normals only (by protocol); `train_anomalous` holds the
    anomalies reserved for semi-supervised training, ordered so that every prefix is stratified by
    defect class (use `take_k` for K of them); thresholds and model selection use `val`; `test` is
    for reporting only."""

    train: list[Record]
    train_anomalous: list[Record]
    val: list[Record]
    test: list[Record]

    @property
    def normal_train(self) -> list[Record]:
        """The normal images of `train`."""
        return [r for r in self.train if not r.is_anomalous]

    @classmethod
    def from_records(cls, records: list[Record]) -> "Split":
        """Group records by their `split` field, keeping their order (e.g. from `fixed_split`)."""
        parts: dict[str, list[Record]] = {p: [] for p in PARTS}
        unsplit = []
        for r in records:
            if r.split in parts:
                parts[r.split].append(r)
            else:
                unsplit.append(f"{r.path}: split {r.split!r}")
        if unsplit:
            raise DataError(
                f"{len(unsplit)} record(s) have no split:\n{listing(unsplit)}\n"
                f"Fix: give every row a split ({', '.join(PARTS)}) or build one with make_split()."
            )
        return cls(**parts)

    def to_records(self) -> list[Record]:
        """All records with their split set: train_anomalous first (in its stratified order), then the
        others sorted by (split, path), the order of the committed split files."""
        head = [r.with_split("train_anomalous") for r in self.train_anomalous]
        rest = [r.with_split(part) for part in ("train", "val", "test") for r in getattr(self, part)]
        return head + sorted(rest, key=lambda r: (r.split, str(r.path)))

    def counts(self) -> dict[str, int]:
        """Sizes as in the splits README table: train, train_anomalous, val/test normal and anomalous."""
        def n(part: str, anomalous: bool) -> int:
            return sum(r.is_anomalous == anomalous for r in getattr(self, part))

        return {
            "train": len(self.train),
            "train_anomalous": len(self.train_anomalous),
            "val_normal": n("val", False),
            "val_anomalous": n("val", True),
            "test_normal": n("test", False),
            "test_anomalous": n("test", True),
        }


def _by_class(records: list[Record]) -> dict[str, list[Record]]:
    groups: dict[str, list[Record]] = defaultdict(list)
    for r in _by_path(records):
        groups[r.defect_class].append(r)
    return dict(sorted(groups.items()))


def _largest_remainder(sizes: dict[str, int], n: int) -> dict[str, int]:
    """Split n proportionally to sizes; leftover units go to the largest fractional parts (ties: class name)."""
    total = sum(sizes.values())
    if not 0 <= n <= total:
        raise ValueError(f"cannot allocate {n} of {total}")
    quotas = {c: n * s / total for c, s in sizes.items()}
    alloc = {c: min(sizes[c], math.floor(q)) for c, q in quotas.items()}
    order = sorted(sizes, key=lambda c: (-(quotas[c] - math.floor(quotas[c])), c))
    left = n - sum(alloc.values())
    while left > 0:
        for c in order:
            if left and alloc[c] < sizes[c]:
                alloc[c] += 1
                left -= 1
    return alloc


def _interleave(groups: dict[str, list[Record]]) -> list[Record]:
    """Merge per-class lists so that every prefix holds each class in proportion (±1).

    At step k, take from the class furthest behind its share k·n_c/n; ties go to the class first in
    name order. This reproduces the order of train_anomalous in the committed split files.
    """
    sizes = {c: len(v) for c, v in groups.items()}
    n = sum(sizes.values())
    taken = Counter()
    out = []
    for k in range(1, n + 1):
        # deficit·n in integers, so equal deficits compare equal (floats would break ties at random)
        best = max((c for c in sorted(sizes) if taken[c] < sizes[c]), key=lambda c: k * sizes[c] - taken[c] * n)
        out.append(groups[best][taken[best]])
        taken[best] += 1
    return out


def _shuffled(records: list[Record], rng: np.random.Generator) -> list[Record]:
    return [records[i] for i in rng.permutation(len(records))]


def stratified_order(records: list[Record], *, seed: int = 0) -> list[Record]:
    """The records shuffled within each defect class and interleaved so that every prefix is
    stratified by class; the first n are a stratified random sample of size n."""
    rng = np.random.default_rng(seed)
    return _interleave({c: _shuffled(g, rng) for c, g in _by_class(records).items()})


def _check_ratios(ratios: tuple[float, float, float]) -> None:
    ok = len(ratios) == 3 and all(isinstance(r, (int, float)) and r >= 0 for r in ratios)
    if not ok or abs(sum(ratios) - 1.0) > 1e-6 or ratios[0] <= 0:
        raise ConfigError(
            f"ratios={ratios!r} is invalid. Fix: pass three non-negative train/val/test fractions of the "
            "normal images that sum to 1, with train > 0, e.g. ratios=(0.6, 0.2, 0.2)."
        )


def make_split(
    records: list[Record],
    *,
    seed: int = 0,
    ratios: tuple[float, float, float] = (0.6, 0.2, 0.2),
    n_train_anomalous: int = 80,
) -> Split:
    """Split records by the benchmark protocol (shared/splits/README.md).

    Normal images are split train:val:test by `ratios` (train = round(0.6·N), test = round(0.2·N),
    val = the rest); `n_train_anomalous` anomalies are reserved for semi-supervised training,
    allocated to defect classes by largest remainder and ordered so that every prefix is stratified;
    the remaining anomalies go half to val and half to test within each class. Deterministic per seed.
    """
    records = list(records)
    check_records(records)
    _check_ratios(ratios)
    if isinstance(n_train_anomalous, bool) or not isinstance(n_train_anomalous, int) or n_train_anomalous < 0:
        raise ConfigError(f"n_train_anomalous={n_train_anomalous!r} is invalid. Fix: pass an integer >= 0.")
    normals = _by_path([r for r in records if not r.is_anomalous])
    anomalies = [r for r in records if r.is_anomalous]
    if not normals:
        raise DataError("make_split: no normal images among the records. Fix: add defect-free images (label 'normal').")
    if len(anomalies) < n_train_anomalous + 2:
        raise DataError(
            f"make_split: {len(anomalies)} anomalous image(s), but the protocol needs n_train_anomalous="
            f"{n_train_anomalous} plus at least 2 (one for val, one for test). Fix: pass n_train_anomalous <= "
            f"{max(0, len(anomalies) - 2)} (--n-train-anomalous) or add anomalous images."
        )
    rng = np.random.default_rng(seed)

    shuffled = _shuffled(normals, rng)
    n_train = _round_half_up(ratios[0] * len(normals))
    n_test = _round_half_up(ratios[2] * len(normals))
    if n_train == 0 or n_train + n_test > len(normals):
        raise DataError(
            f"make_split: {len(normals)} normal image(s) are too few for ratios {ratios}. Fix: add normal images."
        )
    train = shuffled[:n_train]
    test = shuffled[n_train : n_train + n_test]
    val = shuffled[n_train + n_test :]

    groups = {c: _shuffled(g, rng) for c, g in _by_class(anomalies).items()}
    alloc = _largest_remainder({c: len(g) for c, g in groups.items()}, n_train_anomalous)
    reserved = {c: g[: alloc[c]] for c, g in groups.items() if alloc[c]}
    val_extra = True  # odd leftovers alternate between val and test so the totals stay balanced
    for c, g in groups.items():
        rest = g[alloc[c] :]
        n_val = len(rest) // 2
        if len(rest) % 2:
            n_val += val_extra
            val_extra = not val_extra
        val += rest[:n_val]
        test += rest[n_val:]
    split = Split(
        train=_by_path(train),
        train_anomalous=_interleave(reserved),
        val=_by_path(val),
        test=_by_path(test),
    )
    return Split(*([r.with_split(part) for r in getattr(split, part)] for part in PARTS))


def take_k(split: Split, k: int) -> Split:
    """The split with only the first k reserved anomalies (a stratified prefix) in train_anomalous."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ConfigError(f"k={k!r} is invalid. Fix: pass a number of anomalous training images >= 0.")
    available = len(split.train_anomalous)
    if k > available:
        raise DataError(
            f"take_k: asked for {k} anomalous training images but the split reserves only {available}. "
            f"Fix: pass k <= {available}, or make a split with more (make_split(n_train_anomalous=...))."
        )
    return Split(
        train=list(split.train), train_anomalous=split.train_anomalous[:k], val=list(split.val), test=list(split.test)
    )


_FRACTION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*[/:]\s*([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*$", re.I)


def parse_ratio(s: str | float | int) -> float | None:
    """A positive ratio as a float: "1/16" → 0.0625, "0.25" → 0.25, 0.5 → 0.5; "unsupervised" → None
    (meaning exactly one anomaly). ConfigError for anything else."""

    def bad() -> ConfigError:
        return ConfigError(
            f"positive ratio {s!r} is invalid. Fix: use a positive fraction like 1/16, a number like 0.0625, "
            f"or '{UNSUPERVISED}' (standard choices: {', '.join(POSITIVE_RATIOS)})."
        )

    if isinstance(s, bool):
        raise bad()
    if isinstance(s, (int, float)):
        value = float(s)
    elif isinstance(s, str):
        text = s.strip().lower()
        if text == UNSUPERVISED:
            return None
        m = _FRACTION.match(text)
        try:
            if m:
                den = float(m.group(2))
                value = float(m.group(1)) / den if den else math.nan
            else:
                value = float(text)
        except ValueError:
            raise bad() from None
    else:
        raise bad()
    if not math.isfinite(value) or value <= 0:
        raise bad()
    return value


def positive_ratio_subset(
    normal: list[Record], anomalous: list[Record], ratio: str | float | None, *, seed: int = 0
) -> list[Record]:
    """A training set at a given positive ratio (the deeper-FCDD protocol): all N normals plus
    round(N·ratio) anomalies (at least 1), sampled stratified by defect class with `seed`.

    `ratio` is a float, a string such as "1/16", or "unsupervised"/None for exactly one anomaly.
    Returns normals first, then the chosen anomalies. For one seed, a smaller ratio's anomalies are
    a subset of a larger ratio's (the sample is a prefix of one stratified order).
    """
    value = None if ratio is None else parse_ratio(ratio)
    normal, anomalous = list(normal), list(anomalous)
    if not normal:
        raise DataError("positive_ratio_subset: no normal images. Fix: pass the normal training images.")
    wrong = [f"{r.path} ({r.label})" for r in normal if r.is_anomalous] + [
        f"{r.path} ({r.label})" for r in anomalous if not r.is_anomalous
    ]
    if wrong:
        raise DataError(
            f"positive_ratio_subset: records with the wrong label for their list:\n{listing(wrong)}\n"
            "Fix: pass normal images as `normal` and anomalous images as `anomalous`."
        )
    n = 1 if value is None else max(1, _round_half_up(len(normal) * value))
    if n > len(anomalous):
        raise DataError(
            f"positive_ratio_subset: ratio {ratio} with {len(normal)} normal images needs {n} anomalous images, "
            f"but only {len(anomalous)} are available. Fix: use a ratio <= {len(anomalous)}/{len(normal)} "
            "or add anomalous images."
        )
    return normal + stratified_order(anomalous, seed=seed)[:n]
