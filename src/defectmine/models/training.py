"""The one training loop for every gradient-trained detector and segmenter, and what they share around
it: batch mixing of normal, labelled and synthetic anomalous images, the optimiser recipe, and model
selection on validation data."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from defectmine.data.dataset import ImageDataset
from defectmine.data.images import ImageSpec, normalise
from defectmine.errors import ConfigError, DataError
from defectmine.evaluation.selection import check_val_only
from defectmine.models.augment import augment_images, augment_parts
from defectmine.models.optim import WeightAverage, check_levers, make_optimizer
from defectmine.models.synthetic import resolve_synthetic, synthesize
from defectmine.progress import progress_bar


@dataclass
class MixedBatch:
    """Indices of one training batch: normal images, labelled anomalies, and how many synthetic ones."""

    normal: torch.Tensor
    anomalous: torch.Tensor
    n_synthetic: int


def mixed_batches(
    n_normal: int,
    n_anomalous: int,
    *,
    batch_size: int,
    anomaly_share: float,
    synthetic: bool,
    generator: torch.Generator,
) -> Iterator[MixedBatch]:
    """One epoch = one pass over the normal images, in shuffled batches.

    A share of every batch is anomalous: labelled anomalies drawn with replacement (so a handful of
    them is seen in every batch despite heavy imbalance), synthetic ones made from normal images, or
    half of each when both are on. With neither, batches are all normal (one-class training).
    """
    n_anom_slots = anomalous_slots(batch_size, anomaly_share) if (n_anomalous or synthetic) else 0
    n_norm = batch_size - n_anom_slots
    order = torch.randperm(n_normal, generator=generator)
    for start in _batch_starts(n_normal, n_norm):
        normal_idx = order[start:start + n_norm]
        slots = n_anom_slots
        n_synth = (slots // 2 if n_anomalous else slots) if synthetic else 0
        n_lab = slots - n_synth if n_anomalous else 0
        anomalous_idx = torch.randint(0, max(n_anomalous, 1), (n_lab,), generator=generator)
        yield MixedBatch(normal_idx, anomalous_idx, n_synth)


def anomalous_slots(batch_size: int, anomaly_share: float) -> int:
    """How many places of every batch `mixed_batches` gives to anomalies (when there are any)."""
    return min(round(batch_size * anomaly_share), batch_size - 1)


def _batch_starts(n_normal: int, n_norm: int) -> range:
    """Batch start offsets; a tiny last batch (under half a batch) is dropped: it only adds batch-norm
    noise, and the shuffle differs every epoch so every image is still seen."""
    n_full, rest = divmod(n_normal, n_norm)
    keep_last = rest >= max(2, n_norm // 2) or n_full == 0
    return range(0, (n_full + keep_last) * n_norm, n_norm)


def n_batches(n_normal: int, batch_size: int, anomaly_share: float) -> int:
    """How many batches `mixed_batches` yields per epoch."""
    return len(_batch_starts(n_normal, batch_size - anomalous_slots(batch_size, anomaly_share)))


class BestState:
    """Keeps the weights of the epoch with the best validation value (model selection on val only).

    `checks_since_best` counts the validations since the best one (early stopping reads it);
    `stopped_epoch` is set when training stopped early.
    """

    def __init__(self):
        self.value = -math.inf
        self.epoch: int | None = None
        self._state: dict | None = None
        self.checks_since_best = 0
        self.stopped_epoch: int | None = None

    def update(self, model: nn.Module, value: float, epoch: int) -> bool:
        if value is None or not value > self.value:
            self.checks_since_best += 1
            return False
        self.value, self.epoch, self.checks_since_best = value, epoch, 0
        self._state = copy.deepcopy(model.state_dict())
        return True

    def restore(self, model: nn.Module) -> None:
        if self._state is not None:
            model.load_state_dict(self._state)


def train_epochs(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, object], torch.Tensor],
    batches: Callable[[], Iterable],
    optimizer: torch.optim.Optimizer,
    epochs: int,
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    steps_per_epoch: int | None = None,
    on_epoch_end: Callable[[int, float], str | None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    after_step: Callable[[], None] | None = None,
    description: str = "training",
    quiet: bool = False,
) -> list[float]:
    """Run `epochs` epochs of `loss_fn(model, batch)` over `batches()`; returns the mean loss per epoch.

    `on_epoch_end(epoch, mean_loss)` may return a status string for the progress bar (e.g. the
    validation AUROC). `should_stop()`, asked after it, ends training early when it returns True.
    `after_step()` is called after every optimiser step (e.g. a weight average's update).
    """
    history: list[float] = []
    total = epochs * steps_per_epoch if steps_per_epoch else None
    status = ""
    with progress_bar(quiet) as bar:
        task = bar.add_task(description, total=total, status="")
        for epoch in range(epochs):
            model.train()
            losses = []
            for batch in batches():
                loss = loss_fn(model, batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"{description}: loss became {loss.item()} at epoch {epoch + 1}; lower the learning rate."
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if after_step is not None:
                    after_step()
                losses.append(loss.item())
                bar.update(task, advance=1, status=f"epoch {epoch + 1}/{epochs} loss {losses[-1]:.4f} {status}")
            if scheduler is not None:
                scheduler.step()
            history.append(sum(losses) / max(len(losses), 1))
            if on_epoch_end is not None:
                status = on_epoch_end(epoch, history[-1]) or status
            if should_stop is not None and should_stop():
                break
    return history


def select_on_val(
    network: nn.Module, best: BestState, validate: Callable[[], float] | None, *, every: int, epochs: int,
    metric: str, patience: int | None = None, on_validation: Callable[[int, float], None] | None = None,
) -> Callable[[int, float], str | None]:
    """The `on_epoch_end` of `train_epochs` for model selection: calls `validate()` every `every`
    epochs and after the last one, keeps the weights of its highest value in `best`, and returns the
    progress-bar status (`metric` names the value). With `validate` None it does nothing.

    patience: stop once this many validations in a row have not beaten the best one (sets
    `best.stopped_epoch`; pass `lambda: best.stopped_epoch is not None` as `train_epochs`'s
    `should_stop`). None: always train every epoch.
    on_validation: called as `on_validation(epoch, value)` after each validation (e.g. a tuner's
        report to its pruner); it may raise to abandon the fit. It only reads, so weights are the same
        with or without it.
    """

    def on_epoch_end(epoch: int, loss: float) -> str | None:
        last = epoch + 1 == epochs
        if validate is None or not ((epoch + 1) % every == 0 or last):
            return None
        value = validate()
        best.update(network, value, epoch)
        if on_validation is not None:
            on_validation(epoch, value)
        status = f"val {metric} {value:.3f} (best {best.value:.3f})"
        if patience is not None and not last and best.checks_since_best >= patience:
            best.stopped_epoch = epoch
            status += f"; stopped early (no gain in {patience} checks)"
        return status

    return on_epoch_end


@dataclass
class TrainingConfig:
    """Hyperparameters every gradient-trained image detector shares; `fit_network` reads them.

    backbone: "cnn" (small from-scratch CNN) or a timm name (vgg16, resnet18, inception_v3, ...).
    backbone_weights: None, "pretrained" (timm hub, needs network) or a local weights file.
    width: base channel count of the small CNN (8: as good as 12 for FCDD on ELPV at half the CPU time).
    stride: output stride of the backbone's feature map.
    synthetic: synthetic anomalies - "auto" (cut-paste, only without labelled anomalies), "none",
        "confetti", "cutpaste" or "mixed".
    anomaly_share: share of each batch that is anomalous (labelled and/or synthetic).
    eval_every: validate every n epochs (and after the last) when val has both classes, and keep
        the weights of the best validation value.
    patience: early stopping - end training once this many validations in a row have not beaten
        the best one (None: train every epoch; the best weights are kept either way).
    freeze_backbone: keep the backbone's weights fixed and train only the head.
    epochs: training epochs.
    batch_size: images per training batch.
    lr: learning rate (cosine schedule over the epochs).
    weight_decay: weight decay of the optimiser.
    optimizer: "adam" (default), "adamw" or "sgd" (momentum 0.9, Nesterov).
    warmup_epochs: linear warm-up of the learning rate over this many epochs, then the cosine over
        the rest (0: none; must be below epochs).
    ema: decay of an exponential moving average of the weights (e.g. 0.999, per optimiser step);
        validation and the final weights use the average. None: off.
    augment: training-time augmentation: True / "flips" (random horizontal and vertical flips),
        False / "none", "all", or a "+"-joined subset of flips, rot90 (square images only), affine,
        color, cutout - see `models.augment`.
    tta: test-time augmentation when scoring: image scores and maps are the mean over the four flips.
    ensemble: members of a seed ensemble (1: one network). n > 1 trains n networks with seeds seed ..
        seed + n - 1 (n times the fit time) and scores with the mean of their standardised scores
        (`models.ensemble`).
    drop_path: stochastic depth rate of timm backbones (0: off; the own "cnn" / "vit_tiny" have none).
    depth: convolutions per stage after the first of the "cnn" backbone (2; >= 1; "cnn" only).
    norm: the backbone's normalisation, "batch" or "group" (cnn, or timm's resnet family).
    bn_momentum: momentum of every batch norm of the backbone, in (0, 1] (None: torch's 0.1).
    (What each of these three refuses: `backbones.capacity.check_capacity`.)
    score_batch_size: images per batch when scoring.
    seed: training seed (weights, batches, synthetic anomalies).
    device: auto (CUDA when present), cpu or cuda.
    quiet: no progress output.
    Subclasses name their detector in `detector_name` (for error messages), may change defaults and
    add fields; `ignored_levers`: the capacity levers their own networks ignore (kept at their defaults).
    """

    detector_name: ClassVar[str] = "detector"
    ignored_levers: ClassVar[tuple[str, ...]] = ()

    backbone: str = "cnn"
    backbone_weights: str | None = None
    width: int = 8
    stride: int = 8
    freeze_backbone: bool = False
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-5
    synthetic: str = "auto"
    anomaly_share: float | None = 0.25
    augment: bool | str = True
    optimizer: str = "adam"
    warmup_epochs: int = 0
    ema: float | None = None
    tta: bool = False
    ensemble: int = 1
    drop_path: float = 0.0
    depth: int = 2
    norm: str = "batch"
    bn_momentum: float | None = None
    eval_every: int = 5
    patience: int | None = None
    score_batch_size: int = 64
    seed: int = 0
    device: str = "auto"
    quiet: bool = False

    def __post_init__(self):
        name = self.detector_name
        if self.epochs < 1 or self.batch_size < 2 or self.eval_every < 1:
            raise ConfigError(f"{name}: epochs and eval_every must be >= 1 and batch_size >= 2.")
        if self.lr <= 0:
            raise ConfigError(f"{name}: lr={self.lr} must be positive.")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"{name}: patience={self.patience} must be >= 1 (validations without gain), or null.")
        resolve_synthetic(self.synthetic, 0)  # validates the name
        check_levers(self)


def check_training_sets(normal: ImageDataset, anomalous: ImageDataset | None, val: ImageDataset | None) -> None:
    """Raise DataError unless `normal` holds >= 2 normal images and the other sets match its spec and labels."""
    if normal is None or len(normal) == 0:
        raise DataError("fit: no normal training images; the detector learns what normal looks like from them.")
    if len(normal) < 2:
        raise DataError("fit: at least 2 normal training images are needed.")
    if normal.labels.any():
        raise DataError("fit: the `normal` set contains anomalous records; pass those as `anomalous`.")
    for name, other in (("anomalous", anomalous), ("val", val)):
        if other is not None and other.spec != normal.spec:
            raise DataError(f"fit: the {name} set was prepared with {other.spec}, the normal set with {normal.spec}.")
    if anomalous is not None and len(anomalous) and not anomalous.labels.all():
        raise DataError("fit: the `anomalous` set contains normal records.")
    if val is not None:
        check_val_only(val, "model selection (fit's val set)")


def has_both_classes(dataset: ImageDataset | None) -> bool:
    """True when `dataset` holds normal and anomalous images (model selection needs both)."""
    return dataset is not None and len(set(dataset.labels.tolist())) == 2


@dataclass
class FitResult:
    """What `fit_network` learned besides the weights: loss history, selected epoch, synthetic kind."""

    history: list[float]
    best_epoch: int | None
    best_value: float | None
    synthetic: str
    stopped_epoch: int | None = None


def fit_network(
    network: nn.Module,
    loss_fn: Callable[[nn.Module, tuple[torch.Tensor, torch.Tensor]], torch.Tensor],
    normal: ImageDataset,
    anomalous: ImageDataset | None,
    *,
    config: TrainingConfig,
    spec: ImageSpec,
    device: torch.device,
    anomaly_share: float | None = None,
    validate: Callable[[], float] | None = None,
    metric: str = "AUROC",
    description: str = "training",
    on_validation: Callable[[int, float], None] | None = None,
) -> FitResult:
    """Train `network` on mixed batches of normal, labelled and synthetic anomalous images.

    `config.anomaly_share` is overridden by `anomaly_share` when given. Batches are
    ``(images, labels)``: normalised float images (channels_last) and float labels, 1 = anomalous.
    Optimiser, schedule, weight average and model selection: `train_and_select`. When `validate` is
    given it is called every `eval_every` epochs and after the last one; the weights of its highest
    value (`metric`, for the progress bar) are restored.
    `on_validation(epoch, value)` is called after each validation (see `select_on_val`).
    """
    cfg = config
    share = cfg.anomaly_share if anomaly_share is None else anomaly_share
    normal_px = normal.raw_images().to(device)
    anomalous_px = anomalous.raw_images().to(device) if anomalous is not None and len(anomalous) else None
    n_anomalous = 0 if anomalous_px is None else len(anomalous_px)
    synthetic = resolve_synthetic(cfg.synthetic, n_anomalous)
    generator = torch.Generator().manual_seed(cfg.seed)
    augment = augment_parts(cfg.augment)

    def batches():
        for batch in mixed_batches(
            len(normal_px), n_anomalous, batch_size=cfg.batch_size, anomaly_share=share,
            synthetic=synthetic != "none", generator=generator,
        ):
            parts = [normal_px[batch.normal.to(device)]]
            if len(batch.anomalous):
                parts.append(anomalous_px[batch.anomalous.to(device)])
            if batch.n_synthetic:
                source = torch.randint(0, len(normal_px), (batch.n_synthetic,), generator=generator)
                parts.append(synthesize(normal_px[source.to(device)], synthetic, generator))
            pixels = torch.cat(parts)
            labels = torch.zeros(len(pixels), device=device)
            labels[len(parts[0]):] = 1.0
            if augment:
                pixels = augment_images(pixels, augment, generator)
            yield normalise(pixels, spec).contiguous(memory_format=torch.channels_last), labels

    mixing = n_anomalous or synthetic != "none"
    steps = n_batches(len(normal_px), cfg.batch_size, share if mixing else 0.0)
    history, best = train_and_select(network, loss_fn, batches, cfg, steps_per_epoch=steps, validate=validate,
                                     metric=metric, description=description, on_validation=on_validation)
    return FitResult(history, best.epoch, best.value if best.epoch is not None else None, synthetic,
                     best.stopped_epoch)


def train_and_select(
    network: nn.Module, loss_fn: Callable, batches: Callable[[], Iterable], cfg: TrainingConfig, *,
    steps_per_epoch: int, validate: Callable[[], float] | None, metric: str = "AUROC", description: str = "training",
    on_validation: Callable[[int, float], None] | None = None,
) -> tuple[list[float], BestState]:
    """`train_epochs` with the configured optimiser and schedule, model selection by `validate` (see
    `select_on_val`), early stopping, and the weight average when `cfg.ema` is set (validated and kept
    instead of the raw weights). Leaves the selected (or last) weights in `network`; returns the loss
    history and the `BestState`."""
    optimizer, scheduler = make_optimizer(network, lr=cfg.lr, weight_decay=cfg.weight_decay, epochs=cfg.epochs,
                                          optimizer=cfg.optimizer, warmup_epochs=cfg.warmup_epochs)
    best = BestState()
    on_epoch_end = select_on_val(network, best, validate, every=cfg.eval_every, epochs=cfg.epochs, metric=metric,
                                 patience=cfg.patience, on_validation=on_validation)
    average = WeightAverage(network, cfg.ema) if cfg.ema is not None else None
    if average is not None:
        selecting = on_epoch_end

        def on_epoch_end(epoch: int, loss: float) -> str | None:  # validate (and keep) the averaged weights
            with average.swapped_in(network):
                return selecting(epoch, loss)

    history = train_epochs(
        network, loss_fn, batches, optimizer, cfg.epochs, scheduler=scheduler, steps_per_epoch=steps_per_epoch,
        on_epoch_end=on_epoch_end, should_stop=lambda: best.stopped_epoch is not None,
        after_step=None if average is None else lambda: average.update(network),
        description=description, quiet=cfg.quiet,
    )
    if average is not None:
        average.copy_to(network)
    best.restore(network)
    return history, best
