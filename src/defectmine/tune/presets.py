"""Named parameter sets (`fit --preset NAME`, `tune --preset NAME`), defined here and nowhere else.

A preset fills run settings and detector options that neither the command line nor a `--config`
file sets: command-line options > --config file > --preset > defaults.

"quality" is the heavier preset of issue 18: longer training and more networks, for when CPU time
is cheaper than missed defects. For each of FCDD, the classifier and LIAC it is the recipe
benchmarks/levers.py combined from that detector's val-best levers on Magnetic Tile at K = 80, as a
seed ensemble of 3 (BENCHMARKS.md, recipe section: the ensemble beats the single recipe network on
val, and the recipe beats the defaults, at three recipe fits' time: the table's fit s column).
`measured` stays False until every detector's values come from a recorded measurement on both
benchmark sets (ELPV's LIAC and classifier levers have run only in part).
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


# levers.py's recipes (Magnetic Tile, K = 80), each as three seeds' networks averaged. FCDD: flips +
# brightness/contrast, width 16, 50 epochs, flip TTA. Classifier: flips + brightness/contrast, 50 epochs, flip
# TTA (width 16 lost on val). LIAC: no flips, flip TTA (50 epochs and width 16 lost on val).
_RECIPES = {
    "fcdd": {"augment": "flips+color", "width": 16, "epochs": 50, "tta": True, "ensemble": 3},
    "classifier": {"augment": "flips+color", "epochs": 50, "tta": True, "ensemble": 3},
    "liac": {"augment": "none", "tta": True, "ensemble": 3},
}

PRESETS: dict[str, Preset] = {
    "quality": Preset(
        name="quality",
        description="heavier training: each detector's measured recipe as an ensemble of 3 seeds (FCDD "
                    "flips+color, width 16, 50 epochs, TTA; classifier flips+color, 50 epochs, TTA; LIAC no "
                    "flips, TTA)",
        detector_params={name: dict(recipe) for name, recipe in _RECIPES.items()},
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
