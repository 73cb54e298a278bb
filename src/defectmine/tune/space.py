"""Search spaces: which detector options `defectmine tune` searches, and over what ranges.

Each detector has a default space (`default_space`); a user space comes from a small YAML or JSON
file (`load_space`), one entry per option:

    lr: {low: 1.0e-4, high: 1.0e-2, log: true}   # a range: float or int as the option's type says
    epochs: {low: 5, high: 40}
    width: [4, 8, 16]                            # a list: the choices
    augment: [true, false]
    loss_params.margin: {low: 1.0, high: 50.0, log: true}   # a key of a dict option (a float range)

Every name is checked against the detector's Config dataclass (unknown -> ConfigError listing the
known ones) and every bound or choice against the option's declared type, before any image is
decoded.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from defectmine.errors import ConfigError
from defectmine.models.params import check_param_types
from defectmine.models.registry import detector_class

#: Options that say where or how loudly to run, or that the tuner itself controls: never searched.
NOT_SEARCHED = ("seed", "device", "quiet", "score_batch_size", "backbone_weights")


@dataclass(frozen=True)
class Dimension:
    """One searched option: a range (`low`..`high`, `log` scale, `integer`) or a list of `choices`.
    `name` may be "option.key" for a key of a dict-valued option (e.g. loss_params.margin)."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple | None = None

    def suggest(self, trial) -> Any:
        """This dimension's value for an Optuna trial."""
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)

    def to_dict(self) -> dict:
        if self.choices is not None:
            return {"choices": list(self.choices)}
        return {"low": self.low, "high": self.high, "log": self.log, "integer": self.integer}


_COMMON = {"lr": {"low": 1e-4, "high": 1e-2, "log": True}, "epochs": {"low": 5, "high": 40},
           "weight_decay": {"low": 1e-6, "high": 1e-3, "log": True},
           "augment": ["none", "flips", "flips+rot90", "all"]}
_DEFAULTS = {
    "fcdd": {**_COMMON, "anomaly_share": {"low": 0.1, "high": 0.5},
             "synthetic": ["auto", "cutpaste", "confetti", "mixed"]},
    "classifier": {**_COMMON, "loss": ["lil", "focal", "weighted_ce", "el"]},
    "liac": {**_COMMON, "acl_weight": {"low": 0.0, "high": 2.0}},
    "segdec": {**_COMMON, "seg_weight": {"low": 0.0, "high": 2.0}, "keep_clean": {"low": 0.2, "high": 0.8},
               "detach_decision": [False, True]},
    # nothing is trained: the space is the features and the Gaussians
    "padim": {"n_features": {"low": 20, "high": 200}, "ridge": {"low": 1e-3, "high": 1e-1, "log": True},
              "sigma": {"low": 1.0, "high": 8.0}},
}
#: Widths of the small CNN searched by default; SegDec's decoder needs wider features.
_WIDTHS = {"segdec": [8, 16, 32]}


def default_space(detector: str, base_params: dict | None = None) -> list[Dimension]:
    """The default space of `detector`: learning rate, epochs, weight decay, flips, and its own levers
    (FCDD: anomaly share and synthetic defects; classifier: the loss; LIAC: the ACL weight and LIL's
    margin; SegDec: the segmentation-loss weight, DLI's clean share, the detached decision head; PaDiM,
    which trains nothing: its kept channels, ridge and map smoothing). With the small CNN (`backbone` "cnn")
    also its width. `base_params` are the detector options of the run the search starts from."""
    base_params = base_params or {}
    entries = dict(_DEFAULTS.get(detector, _COMMON))
    default_backbone = next((f.default for f in fields(detector_class(detector).Config) if f.name == "backbone"), None)
    if base_params.get("backbone", default_backbone) == "cnn":
        entries["width"] = _WIDTHS.get(detector, [4, 8, 16])
    if detector == "liac" and base_params.get("loss", "lil") == "lil":
        entries["loss_params.margin"] = {"low": 1.0, "high": 50.0, "log": True}
    return parse_space(detector, entries, "the default space")


def load_space(path: Path | str, detector: str) -> list[Dimension]:
    """The space in a YAML (.yaml/.yml) or JSON file, checked against `detector`'s options."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--space {path}: no such file. Fix: write a YAML or JSON file such as "
                          "`lr: {low: 1.0e-4, high: 1.0e-2, log: true}`.")
    text = path.read_text(encoding="utf-8")
    kind = "YAML" if path.suffix.lower() in (".yaml", ".yml") else "JSON"
    try:
        if kind == "YAML":
            import yaml

            entries = yaml.safe_load(text)
        else:
            entries = json.loads(text)
    except Exception as err:  # yaml.YAMLError or json.JSONDecodeError: one line either way
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"--space {path}: cannot be read as {kind} ({first}).") from None
    return parse_space(detector, entries, f"--space {path}")


def parse_space(detector: str, entries: Any, where: str) -> list[Dimension]:
    """Dimensions from a mapping option -> range or choices; ConfigError naming `where` and the entry."""
    if not isinstance(entries, dict) or not entries:
        raise ConfigError(f"{where}: expected a mapping of detector options to ranges or choices, "
                          "e.g. lr: {low: 1.0e-4, high: 1.0e-2, log: true}.")
    config_class = detector_class(detector).Config
    hints = typing.get_type_hints(config_class)
    known = sorted(f.name for f in fields(config_class) if f.init and f.name not in NOT_SEARCHED)
    return [_dimension(detector, config_class, hints, known, str(name), entry, where)
            for name, entry in entries.items()]


def _dimension(detector, config_class, hints, known, name, entry, where) -> Dimension:
    option, _, key = name.partition(".")
    if option not in known:
        raise ConfigError(f"{where}: {detector} has no option {option!r} to search; known options: {', '.join(known)}.")
    if key and typing.get_origin(hints[option]) is not dict and hints[option] is not dict:
        raise ConfigError(f"{where}: {name!r}: {option} is not a dict option, so it has no key {key!r}.")

    def check(value):  # the declared type of the option (a dict option's keys take numbers or text)
        if key:
            if not isinstance(value, (int, float, str, bool)) or value is None:
                raise ConfigError(f"{where}: {name}={value!r} must be a number, text or true/false.")
            return
        try:
            check_param_types(detector, config_class, {option: value})
        except ConfigError as err:
            raise ConfigError(f"{where}: {name}: {err}") from None

    if isinstance(entry, list):
        if not entry:
            raise ConfigError(f"{where}: {name}: an empty list of choices.")
        for choice in entry:
            check(choice)
        return Dimension(name, choices=tuple(entry))
    if not isinstance(entry, dict) or not {"low", "high"} <= set(entry) or set(entry) - {"low", "high", "log"}:
        raise ConfigError(f"{where}: {name}: give a range {{low: L, high: H}} (and log: true for a log scale) "
                          f"or a list of choices, not {entry!r}.")
    low, high, log = entry["low"], entry["high"], entry.get("log", False)
    for bound in (low, high):
        check(bound)
        if isinstance(bound, bool) or not isinstance(bound, (int, float)):
            raise ConfigError(f"{where}: {name}: the bounds of a range must be numbers, got {bound!r}.")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: {name}: log must be true or false, got {log!r}.")
    if not low < high:
        raise ConfigError(f"{where}: {name}: low={low} must be below high={high}.")
    if log and low <= 0:
        raise ConfigError(f"{where}: {name}: a log range needs low > 0, got {low}.")
    integer = not key and _accepts_int_only(hints[option])
    return Dimension(name, low=low, high=high, log=log, integer=integer)


def _accepts_int_only(kind) -> bool:
    args = typing.get_args(kind) or (kind,)
    return int in args and float not in args


def trial_params(dimensions: list[Dimension], values: dict, base_params: dict) -> dict:
    """The detector options of a trial: `base_params` with the searched `values` (name -> value) set,
    a "option.key" name setting one key of that dict option."""
    params = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base_params.items()}
    for dim in dimensions:
        if dim.name not in values:
            continue
        option, _, key = dim.name.partition(".")
        if key:
            params[option] = {**(params.get(option) or {}), key: values[dim.name]}
        else:
            params[option] = values[dim.name]
    return params
