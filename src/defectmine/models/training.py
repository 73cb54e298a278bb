"""The one training loop for every gradient-trained detector, and the batch mixing they share."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

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
    n_anom_slots = _anomalous_slots(batch_size, anomaly_share) if (n_anomalous or synthetic) else 0
    n_norm = batch_size - n_anom_slots
    order = torch.randperm(n_normal, generator=generator)
    for start in _batch_starts(n_normal, n_norm):
        normal_idx = order[start:start + n_norm]
        slots = n_anom_slots
        n_synth = (slots // 2 if n_anomalous else slots) if synthetic else 0
        n_lab = slots - n_synth if n_anomalous else 0
        anomalous_idx = torch.randint(0, max(n_anomalous, 1), (n_lab,), generator=generator)
        yield MixedBatch(normal_idx, anomalous_idx, n_synth)


def _anomalous_slots(batch_size: int, anomaly_share: float) -> int:
    return min(round(batch_size * anomaly_share), batch_size - 1)


def _batch_starts(n_normal: int, n_norm: int) -> range:
    """Batch start offsets; a tiny last batch (under half a batch) is dropped: it only adds batch-norm
    noise, and the shuffle differs every epoch so every image is still seen."""
    n_full, rest = divmod(n_normal, n_norm)
    keep_last = rest >= max(2, n_norm // 2) or n_full == 0
    return range(0, (n_full + keep_last) * n_norm, n_norm)


def n_batches(n_normal: int, batch_size: int, anomaly_share: float) -> int:
    """How many batches `mixed_batches` yields per epoch."""
    return len(_batch_starts(n_normal, batch_size - _anomalous_slots(batch_size, anomaly_share)))


class BestState:
    """Keeps the weights of the epoch with the best validation value (model selection on val only)."""

    def __init__(self):
        self.value = -math.inf
        self.epoch: int | None = None
        self._state: dict | None = None

    def update(self, model: nn.Module, value: float, epoch: int) -> bool:
        if value is None or not value > self.value:
            return False
        self.value, self.epoch = value, epoch
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
    description: str = "training",
    quiet: bool = False,
) -> list[float]:
    """Run `epochs` epochs of `loss_fn(model, batch)` over `batches()`; returns the mean loss per epoch.

    `on_epoch_end(epoch, mean_loss)` may return a status string for the progress bar (e.g. the
    validation AUROC).
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
                losses.append(loss.item())
                bar.update(task, advance=1, status=f"epoch {epoch + 1}/{epochs} loss {losses[-1]:.4f} {status}")
            if scheduler is not None:
                scheduler.step()
            history.append(sum(losses) / max(len(losses), 1))
            if on_epoch_end is not None:
                status = on_epoch_end(epoch, history[-1]) or status
    return history
