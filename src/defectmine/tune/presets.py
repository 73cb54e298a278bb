"""Named parameter sets (`fit --preset NAME`, `tune --preset NAME`), defined here and nowhere else.

A preset fills run settings and detector options that neither the command line nor a `--config`
file sets: command-line options > --config file > --preset > defaults.

"quality" is the heavier preset of issue 18: longer training and wider networks, for when CPU time
is cheaper than missed defects. For FCDD it is the recipe benchmarks/levers.py combined from the
val-best levers on Magnetic Tile at K = 80, as a seed ensemble of 3 (BENCHMARKS.md, recipe section:
the ensemble beats the single recipe network on val at K = 40 and 80, and the recipe beats the
defaults, at three recipe fits' time: the table's fit s column); for the classifier and LIAC it is still a first
guess. `measured` stays False until every detector's values come from a recorded measurement on both
benchmark sets.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from defectmine.errors import ConfigError


@dataclass(frozen=True)
class Preset:
    """A named set of run settings (RunConfig fields) and per-detector options.

    run: RunConfig fields, e.g. {"image_size": 224}.
    detector_params: detector name -> its options, e.g. {"fcdd": {"epochs": 60}}; a detector missing
        here gets only `run`.
    measured: whether the values come from a recorded measurement (BENCHMARKS.md) or are a guess.
    """

    name: str
    description: str
    run: dict = field(default_factory=dict)
    detector_params: dict = field(default_factory=dict)
    measured: bool = False


_HEAVIER_TRAINING = {"epochs": 60, "width": 16, "eval_every": 2}
# levers.py's FCDD recipe (Magnetic Tile, K = 80): flips + brightness/contrast, width 16, 50 epochs, flip TTA,
# three seeds' networks averaged
_FCDD_RECIPE = {"augment": "flips+color", "width": 16, "epochs": 50, "tta": True, "ensemble": 3}

PRESETS: dict[str, Preset] = {
    "quality": Preset(
        name="quality",
        description="heavier training: FCDD's measured recipe (flips+color, width 16, 50 epochs, TTA, an "
                    "ensemble of 3 seeds); "
                    "classifier and LIAC 60 epochs, width 16, validation every 2 epochs (not yet measured)",
        detector_params={"fcdd": dict(_FCDD_RECIPE), "classifier": dict(_HEAVIER_TRAINING),
                         "liac": dict(_HEAVIER_TRAINING)},
    ),
}


def get_preset(name: str) -> Preset:
    """The preset called `name`, or one ConfigError listing the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"--preset {name!r} is unknown. Fix: use one of {', '.join(PRESETS)}.") from None


def apply_preset(settings: dict, name: str, *, keep: Iterable[str] = ()) -> dict:
    """`settings` (RunConfig fields as a dict) with preset `name` filled in, except where `keep` names a
    run field or a detector option (set on the command line or in a --config file)."""
    preset = get_preset(name)
    keep = set(keep)
    out = dict(settings)
    for key, value in preset.run.items():
        if key not in keep:
            out[key] = value
    params = dict(out.get("detector_params") or {})
    for key, value in preset.detector_params.get(out.get("detector", "fcdd"), {}).items():
        if key not in keep:
            params[key] = value
    out["detector_params"] = params
    return out
