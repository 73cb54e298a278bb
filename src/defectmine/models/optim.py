"""The optimiser recipe of every gradient-trained detector and segmenter, an exponential moving
average of the weights (the `optimizer`, `warmup_epochs` and `ema` options of `TrainingConfig`), and
the check of those training levers (with `augment`, `drop_path` and the capacity levers `depth`, `norm`
and `bn_momentum` of `backbones.capacity`)."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch import nn

from defectmine.errors import ConfigError
from defectmine.models.augment import augment_parts

OPTIMIZERS = ("adam", "adamw", "sgd")


def make_optimizer(
    network: nn.Module, *, lr: float, weight_decay: float, epochs: int, optimizer: str = "adam",
    warmup_epochs: int = 0,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """An optimiser over the trainable parameters and its per-epoch schedule.

    optimizer: "adam" (the default recipe), "adamw" (decoupled weight decay) or "sgd" (momentum 0.9,
        Nesterov).
    warmup_epochs: the learning rate rises linearly over this many epochs (from lr / (warmup + 1) up
        to lr), then follows a cosine over the remaining epochs; 0: a cosine over all `epochs`.
    """
    check_schedule(optimizer, warmup_epochs, epochs)
    params = [p for p in network.parameters() if p.requires_grad]
    if optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    elif optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=0.9, nesterov=True)
    if not warmup_epochs:
        return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    warmup = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / (warmup_epochs + 1), total_iters=warmup_epochs)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs - warmup_epochs)
    return opt, torch.optim.lr_scheduler.SequentialLR(opt, [warmup, cosine], milestones=[warmup_epochs])


def check_schedule(optimizer: str, warmup_epochs: int, epochs: int, owner: str = "") -> None:
    """ConfigError for an unknown optimiser or a warm-up not below the epochs (`owner` prefixes the message)."""
    prefix = f"{owner}: " if owner else ""
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"{prefix}optimizer={optimizer!r} is unknown. Fix: use one of {', '.join(OPTIMIZERS)}.")
    if not 0 <= warmup_epochs < epochs:
        raise ConfigError(f"{prefix}warmup_epochs={warmup_epochs} must be >= 0 and below epochs={epochs}.")


def check_ema(decay: float | None, owner: str = "") -> None:
    """ConfigError unless the weight-average decay is None (off) or in (0, 1)."""
    if decay is not None and not 0 < decay < 1:
        raise ConfigError(f"{f'{owner}: ' if owner else ''}ema={decay} must be in (0, 1), e.g. 0.999, or null (off).")


class WeightAverage:
    """Exponential moving average of a network's parameters, updated after every optimiser step.

    The decay starts low and rises to `decay` (min(decay, (1 + n) / (10 + n)) after n updates, as in
    TensorFlow's and timm's EMA), so that short fits on small data are not dominated by the random
    initial weights. Buffers (batch-norm statistics) are copied, not averaged.
    """

    def __init__(self, network: nn.Module, decay: float):
        check_ema(decay)
        self.decay = decay
        self.updates = 0
        self._params = {name for name, _ in network.named_parameters()}
        self.state = {key: value.detach().clone() for key, value in network.state_dict().items()}

    @torch.no_grad()
    def update(self, network: nn.Module) -> None:
        """Move the average towards the network's current weights."""
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        current = network.state_dict()
        for key, value in current.items():
            if key in self._params and value.is_floating_point():
                self.state[key].lerp_(value.detach(), 1 - decay)
            else:
                self.state[key].copy_(value)

    def copy_to(self, network: nn.Module) -> None:
        """Load the averaged weights into `network`."""
        network.load_state_dict(self.state)

    @contextlib.contextmanager
    def swapped_in(self, network: nn.Module) -> Iterator[None]:
        """Within the block the network holds the averaged weights; its own come back after it."""
        own = copy.deepcopy(network.state_dict())
        self.copy_to(network)
        try:
            yield
        finally:
            network.load_state_dict(own)


def check_levers(cfg) -> None:
    """ConfigError for a bad augment, optimizer, warmup_epochs, ema, ensemble, drop_path, depth, norm or
    bn_momentum of a `TrainingConfig` (a capacity lever in its `ignored_levers` must keep its default)."""
    from defectmine.backbones.capacity import CAPACITY_DEFAULTS, check_capacity
    from defectmine.models.ensemble import check_ensemble

    name = cfg.detector_name
    check_ensemble(cfg.ensemble, name)
    augment_parts(cfg.augment)
    check_schedule(cfg.optimizer, cfg.warmup_epochs, cfg.epochs, owner=name)
    check_ema(cfg.ema, owner=name)
    for lever in cfg.ignored_levers:
        if getattr(cfg, lever) != CAPACITY_DEFAULTS[lever]:
            raise ConfigError(f"{name}: {lever}={getattr(cfg, lever)!r} does not reach the networks it builds (the "
                              f"capacity levers reach fcdd, classifier and liac). Fix: leave {lever} unset.")
    capacity = {lever: getattr(cfg, lever) for lever in CAPACITY_DEFAULTS if lever not in cfg.ignored_levers}
    check_capacity(cfg.backbone, **capacity, weights=cfg.backbone_weights, owner=name, drop_path=cfg.drop_path)
