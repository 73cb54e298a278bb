"""What defines a run, checked before any image is decoded or any weight is trained."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from defectmine.data import ImageSpec
from defectmine.errors import ConfigError
from defectmine.evaluation.thresholds import THRESHOLD_RULES


@dataclass
class RunConfig:
    """Everything that defines a run. `data` is a folder, a CSV manifest or a built-in set name.

    k: use the first k labelled anomalies of the training pool (None: all of them; 0: none).
    ratio: instead of k, the deeper-FCDD positive ratio ("1/16", "unsupervised", ...).
    split_seed: seed of the split made when the data carries none (unused, and recorded as such,
        when the records bring their own split).

    Every field is checked at construction (unknown threshold rule, "fixed" without a value,
    a non-finite k, ...), so a bad option fails in the first second, never after the fit.
    """

    data: str
    detector: str = "fcdd"
    detector_params: dict = field(default_factory=dict)
    k: int | None = None
    ratio: str | None = None
    image_size: int = 128
    channels: int = 1
    resize: str = "stretch"
    split_seed: int | None = 0
    seed: int = 0
    threshold_rule: str = "max_f1"
    threshold_k: float = 3.0
    threshold_value: float | None = None
    display_quantile: float = 0.25
    report_images: int = 16
    skip_bad: bool = False
    quiet: bool = False

    def __post_init__(self):
        if self.k is not None and self.ratio is not None:
            raise ConfigError("give either k (labelled anomalies) or ratio (positive ratio), not both.")
        if self.k is not None and (isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 0):
            raise ConfigError(f"k={self.k!r}: the number of labelled anomalies must be a whole number >= 0.")
        if self.ratio is not None:
            from defectmine.data.splits import parse_ratio

            parse_ratio(self.ratio)
        check_threshold_options(self.threshold_rule, self.threshold_k, self.threshold_value)
        if not isinstance(self.image_size, int) or isinstance(self.image_size, bool) or self.image_size < 1:
            raise ConfigError(f"--image-size {self.image_size!r}: must be a positive whole number of pixels, e.g. 128.")
        if not isinstance(self.detector_params, dict):
            raise ConfigError(f"detector_params must be a dict of detector options, got {self.detector_params!r}.")
        if not (isinstance(self.display_quantile, (int, float)) and 0 < self.display_quantile <= 1):
            raise ConfigError(f"display_quantile={self.display_quantile!r}: must be in (0, 1], e.g. 0.25.")
        self.spec  # validates channels and resize

    @property
    def spec(self) -> ImageSpec:
        return ImageSpec(size=(self.image_size, self.image_size), channels=self.channels, resize=self.resize)

    def threshold_params(self) -> dict:
        """The keyword arguments of the configured threshold rule."""
        if self.threshold_rule == "mean_std":
            return {"k": self.threshold_k}
        if self.threshold_rule == "fixed":
            return {"value": self.threshold_value}
        return {}


def check_threshold_options(rule: str, k: float | None, value: float | None) -> None:
    """ConfigError for an unknown rule, 'fixed' without a value, or a non-finite k or value."""
    if rule not in THRESHOLD_RULES:
        raise ConfigError(f"--threshold-rule {rule!r} is unknown. Fix: use one of {', '.join(THRESHOLD_RULES)}.")
    if rule == "fixed" and value is None:
        raise ConfigError("--threshold-rule fixed needs --threshold-value (the score above which an image is anomalous).")
    for name, number in (("--threshold-k", k), ("--threshold-value", value)):
        if number is None:
            continue
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
            raise ConfigError(f"{name} {number!r}: must be a finite number.")


def read_config_file(path) -> dict:
    """The run settings (RunConfig fields) stored in a JSON file, for `fit --config FILE`.

    The file is a `defectmine tune` best_config.json or a run folder's config.json (both keep the
    settings under "run"), or a plain JSON object of RunConfig fields. Unknown fields, a missing file
    or invalid JSON raise one ConfigError naming the file and the fix.
    """
    import json
    from dataclasses import fields
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file. Fix: pass a best_config.json written by "
                          "`defectmine tune` or a run folder's config.json.")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"--config {path}: not valid JSON ({err}).") from None
    settings = document.get("run", document) if isinstance(document, dict) else document
    if not isinstance(settings, dict):
        raise ConfigError(f"--config {path}: expected a JSON object of run settings (e.g. {{\"data\": ..., "
                          "\"detector\": \"fcdd\", \"detector_params\": {...}}).")
    known = [f.name for f in fields(RunConfig)]
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise ConfigError(f"--config {path}: unknown field(s) {', '.join(unknown)}; known fields: {', '.join(known)}.")
    return dict(settings)
