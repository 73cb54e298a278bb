"""The options `fit` and `sweep` share, gathered into one dataclass, and list-valued option parsing."""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, fields
from typing import Optional

import typer

from defectmine.cli.app import parse_params

DEFAULT_EPOCHS = 25  # the command line's, for every detector that trains


@dataclass
class ModelOptions:
    """The options `fit` and `sweep` share (data, detector and its parameters, images, threshold); one
    list, so that both commands offer the same model options with the same defaults and help."""

    data: Optional[str]
    detector: str
    backbone: Optional[str]
    backbone_weights: Optional[str]
    freeze_backbone: bool
    epochs: int
    image_size: int
    channels: int
    resize: str
    threshold_rule: str
    threshold_k: float
    threshold_value: Optional[float]
    split_seed: int
    device: str
    param: list[str]
    skip_bad: bool
    quiet: bool

    def run_config(self, **run):
        """A RunConfig from these options; `run` adds the command's own fields (k, ratio, seed)."""
        from defectmine.pipeline import RunConfig

        if self.data is None:
            from defectmine.errors import ConfigError

            raise ConfigError("--data is missing. Fix: pass --data FOLDER (or a CSV manifest, or a built-in set), "
                              "or --config FILE where the command takes one.")
        return RunConfig(**self.settings(**run))

    def settings(self, **run) -> dict:
        """The RunConfig fields these options give, as a dict (`run`: the command's own fields)."""
        params = {"backbone_weights": self.backbone_weights, "device": self.device}
        if self.backbone is not None:  # unset: the detector's own (the small CNN; padim's is resnet18)
            params["backbone"] = self.backbone
        # padim trains nothing: --epochs reaches it only when typed, and then its error names the option
        if self.epochs != DEFAULT_EPOCHS or _has_option(self.detector, "epochs"):
            params["epochs"] = self.epochs
        if self.freeze_backbone:  # only when asked: a detector without a backbone has no such option
            params["freeze_backbone"] = True
        params.update(parse_params(self.param))
        return dict(
            data=self.data, detector=self.detector, detector_params=params, image_size=self.image_size,
            channels=self.channels, resize=self.resize, split_seed=self.split_seed, threshold_rule=self.threshold_rule,
            threshold_k=self.threshold_k, threshold_value=self.threshold_value, skip_bad=self.skip_bad,
            quiet=self.quiet, **run,
        )


def _has_option(detector: str, option: str) -> bool:
    """Whether `detector` has `option`; True for an unknown detector name, whose own error comes later."""
    from defectmine.models.registry import DETECTORS

    cls = DETECTORS.get(detector)
    return cls is None or option in {f.name for f in fields(cls.Config)}


#: Model options that `run_config` puts into detector_params rather than into a RunConfig field.
DETECTOR_OPTIONS = ("backbone", "backbone_weights", "epochs", "device", "freeze_backbone")


def given_options(ctx) -> set[str]:
    """The names of the parameters typed on the command line (or set from the environment), as opposed
    to those left at their defaults: what a --config file or a --preset must not override."""
    # by name: typer may bring its own copy of click, whose ParameterSource is another enum class
    return {name for name in ctx.params
            if getattr(ctx.get_parameter_source(name), "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")}


def layered_run_config(options: ModelOptions, given: set[str], *, config_file=None, preset: str | None = None,
                       **run):
    """The RunConfig of `fit` / `tune`: options given on the command line over the --config file over
    the --preset over the defaults. `given` names the options typed (`given_options`); `run` holds the
    command's own fields (k, ratio, seed)."""
    from defectmine.pipeline import RunConfig

    if config_file is None and preset is None:
        return options.run_config(**run)
    typed = options.settings(**run)
    typed_params = parse_params(options.param) if "param" in given else {}
    keep = {name for name in given if name not in DETECTOR_OPTIONS} | set(typed_params)
    keep |= {name for name in DETECTOR_OPTIONS if name in given}
    if config_file is None:
        settings = typed
    else:
        from defectmine.pipeline.config import read_config_file

        settings = read_config_file(config_file)
        settings.update({name: typed[name] for name in typed if name in given and name != "detector_params"})
        params = dict(settings.get("detector_params") or {})
        params.update({name: typed["detector_params"][name] for name in DETECTOR_OPTIONS
                       if name in given and name in typed["detector_params"]})
        params.update(typed_params)
        settings["detector_params"] = params
        keep |= set(settings) | set(params)
    if preset is not None:
        from defectmine.tune.presets import apply_preset

        settings = apply_preset(settings, preset, keep=keep)
    if settings.get("data") is None:
        return options.run_config(**run)  # the one "--data is missing" error
    return RunConfig(**settings)


MODEL_OPTIONS = {  # name -> (type, typer option); the fields of ModelOptions
    "data": (Optional[str], typer.Option(None, "--data", "-d", help="Folder (normal/, anomalous/<class>/, masks/), CSV manifest, or built-in set: magnetic_tile, elpv.")),
    "detector": (str, typer.Option("fcdd", help="Detector name (`defectmine detectors` lists them).")),
    "backbone": (Optional[str], typer.Option(None, show_default=False, help="'cnn' (from scratch; every detector's default but padim's: resnet18) or a timm name: resnet18, vgg16, inception_v3, ...")),
    "backbone_weights": (Optional[str], typer.Option(None, help="Local weights file, or 'pretrained' (timm hub; needs network).")),
    "freeze_backbone": (bool, typer.Option(False, help="Keep the backbone's weights fixed and train only the head (frozen features, e.g. of --backbone-weights); default: fine-tune all.")),
    "epochs": (int, typer.Option(DEFAULT_EPOCHS, help="Training epochs.")),
    "image_size": (int, typer.Option(128, help="Images are resized to SIZE x SIZE.")),
    "channels": (int, typer.Option(1, help="1 (grayscale) or 3 (RGB).")),
    "resize": (str, typer.Option("stretch", help="'stretch' or 'pad' (keep aspect ratio).")),
    "threshold_rule": (str, typer.Option("max_f1", help="max_f1 (on val), mean_std (val normals), or fixed.")),
    "threshold_k": (float, typer.Option(3.0, help="k of the mean_std rule.")),
    "threshold_value": (Optional[float], typer.Option(None, help="Value of the fixed rule.")),
    "split_seed": (int, typer.Option(0, help="Seed of the split when the data carries none.")),
    "device": (str, typer.Option("auto", help="auto (CUDA when present), cpu or cuda.")),
    "param": (list[str], typer.Option([], "--param", "-p", metavar="KEY=VALUE", help="Detector option (repeatable), e.g. -p lr=0.0005; `defectmine detectors` lists every detector's options and defaults.")),
    "skip_bad": (bool, typer.Option(False, help="Skip unreadable images (and list them) instead of stopping.")),
    "quiet": (bool, typer.Option(False, "--quiet", "-q", help="No progress bars.")),
}  # fmt: skip
assert list(MODEL_OPTIONS) == [f.name for f in fields(ModelOptions)]


def with_model_options(func):
    """Give a command the shared model options: its `options: ModelOptions` parameter is replaced, in
    the command line, by one option per field, and the command receives them gathered."""
    signature = inspect.signature(func, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "options"]
    shared = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
              for name, (kind, option) in MODEL_OPTIONS.items()]
    keyword_own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]

    @functools.wraps(func)
    def wrapper(**kwargs):
        options = ModelOptions(**{name: kwargs.pop(name) for name in MODEL_OPTIONS})
        return func(options=options, **kwargs)

    # data first (as before), then the command's own options, then the shared model options
    wrapper.__signature__ = signature.replace(parameters=shared[:1] + keyword_own + shared[1:])
    wrapper.__annotations__ = {p.name: p.annotation for p in wrapper.__signature__.parameters.values()}
    return wrapper


def split_list(text: str | None, option: str, cast=str) -> list | None:
    """A comma-separated option value as a list (None when the option is absent)."""
    from defectmine.errors import ConfigError

    if text is None:
        return None
    items = [item.strip() for item in text.split(",") if item.strip()]
    try:
        return [cast(item) for item in items]
    except ValueError:
        bad = next(item for item in items if not _castable(item, cast))
        raise ConfigError(f"{option}: {bad!r} is not a whole number; pass a comma-separated list such as "
                          f"{option} {'0,1,2' if option == '--seeds' else '1,2,5,10,20,40,80'}.") from None


def _castable(item: str, cast) -> bool:
    try:
        cast(item)
    except ValueError:
        return False
    return True
