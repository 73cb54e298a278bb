"""`pretrain`: self-supervised pretraining of a backbone on unlabelled images, resumable per epoch.

The output folder ends up holding

    backbone.safetensors   exactly the state dict of build_backbone(backbone, in_chans, stride=, width=).module
    pretrain.json          method and recipe, architecture, image spec, epochs, losses, CPU time, data, versions
    checkpoint/            the last finished epoch (see checkpoint.py); a second call continues from it

so any detector loads the weights with ``backbone_weights="<out>/backbone.safetensors"``.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from defectmine.backbones import build_backbone
from defectmine.data.dataset import ImageDataset
from defectmine.errors import ConfigError, DataError
from defectmine.models.base import resolve_device, seed_everything
from defectmine.models.fcdd import FCDDConfig
from defectmine.models.training import mixed_batches, n_batches, train_epochs
from defectmine.pretrain.checkpoint import load_checkpoint, save_checkpoint
from defectmine.pretrain.methods import method_class

BACKBONE_FILE = "backbone.safetensors"
INFO_FILE = "pretrain.json"
CHECKPOINT_DIR = "checkpoint"
# Chosen by `benchmarks/pretrain_benchmark.py --choose` (FCDD val AUROC at K=10 after equal CPU time per
# method; BENCHMARKS.md "Choosing the pretraining method"): simsiam led on both sets at a 240 CPU-s budget,
# one seed. A full-budget re-run may overturn it: the script says so when it does.
DEFAULT_METHOD = "simsiam"
# FCDD's width, so that its default configuration loads the weights as they are.
DEFAULT_WIDTH = FCDDConfig.width


@dataclass
class PretrainResult:
    """Where the weights are and what pretrain.json says; `start_epoch` > 0 when a checkpoint was continued."""

    out_dir: Path
    weights: Path
    info: dict
    history: list[float]
    start_epoch: int


def pretrain(
    images: ImageDataset,
    *,
    out_dir: Path | str,
    method: str = DEFAULT_METHOD,
    backbone: str | None = None,
    width: int = DEFAULT_WIDTH,
    stride: int = 8,
    epochs: int = 20,
    batch_size: int = 32,
    lr: float | None = None,
    seed: int = 0,
    device: str = "auto",
    init_weights: str | Path | None = None,
    resume: bool = True,
    source: str | None = None,
    quiet: bool = False,
) -> PretrainResult:
    """Pretrain a backbone on `images` (labels are ignored) and save it in `out_dir`.

    Args:
        images: any ImageDataset; its spec (size, channels) is the one detectors should use later.
        out_dir: output folder (backbone.safetensors, pretrain.json, checkpoint/).
        method: "mim" (masked image modelling), "mae" (masked autoencoder, ViT) or "simsiam".
        backbone: "cnn", "vit_tiny" or a timm name; None picks the method's own ("vit_tiny" for mae,
            "cnn" otherwise).
        width, stride: as in build_backbone (default: FCDD's); detectors must use the same values to
            load the weights.
        epochs: total number of epochs; a resumed run trains only the missing ones.
        lr: AdamW learning rate (cosine schedule over `epochs`); None takes the method's default.
        init_weights: hierarchical pretraining - start from these weights (a weights file, a previous
            pretraining folder, or "pretrained" for a timm backbone's published weights) and continue on
            these images, usually a narrower, more task-relevant set.
        resume: continue from out_dir/checkpoint when it holds an unfinished run with the same settings;
            False starts over.
        source: where the images came from, recorded in pretrain.json.

    Raises ConfigError for an unknown method, invalid settings, or init weights of another
    architecture, and DataError for fewer than 2 images.
    """
    method_cls = method_class(method)
    backbone = backbone or method_cls.default_backbone
    lr = method_cls.default_lr if lr is None else lr
    _check_settings(epochs, batch_size, lr)
    _check_images(images)
    out_dir = Path(out_dir)
    init = resolve_init_weights(init_weights, backbone, width, stride)
    torch_device = resolve_device(device)
    spec = images.spec
    run = {
        "method": method, "backbone": backbone, "width": width, "stride": stride, "in_chans": spec.channels,
        "image_spec": spec.to_dict(), "batch_size": batch_size, "lr": lr, "seed": seed,
        "init_weights": None if init is None else str(init), "n_images": len(images),
        "data_fingerprint": _fingerprint(images),
    }

    seed_everything(seed)
    built = build_backbone(backbone, spec.channels, stride=stride, width=width, weights=init)
    network = method_cls(built, spec).to(torch_device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=method_cls.weight_decay)
    checkpoint_dir = out_dir / CHECKPOINT_DIR
    done, history, cpu_before, wall_before = 0, [], 0.0, 0.0
    checkpoint = load_checkpoint(checkpoint_dir) if resume else None
    if checkpoint is not None:
        _check_same_run(checkpoint_dir, checkpoint.run, run, checkpoint.epoch, epochs)
        network.load_state_dict(checkpoint.network)
        optimizer.load_state_dict(checkpoint.optimizer)
        done, history = checkpoint.epoch, list(checkpoint.history)
        cpu_before, wall_before = checkpoint.cpu_seconds, checkpoint.wall_seconds
    start_epoch = done
    # The schedule is a function of the absolute epoch, so a resumed run follows the same curve.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: _cosine(done + e, epochs))

    pixels = images.raw_images().to(torch_device)
    progress = {"epoch": done}
    cpu_start, wall_start = time.process_time(), time.perf_counter()

    def batches():
        # One generator per absolute epoch: a resumed run draws the same batches, masks and views.
        generator = torch.Generator().manual_seed(seed * 1_000_003 + progress["epoch"])
        for batch in mixed_batches(len(pixels), 0, batch_size=batch_size, anomaly_share=0.0, synthetic=False,
                                   generator=generator):
            yield pixels[batch.normal.to(torch_device)], generator

    def loss_fn(model, batch):
        return model.loss(*batch)

    def on_epoch_end(epoch: int, loss: float) -> str:
        progress["epoch"] = done + epoch + 1
        history.append(loss)
        save_checkpoint(
            checkpoint_dir, network, optimizer, epoch=progress["epoch"], history=history,
            cpu_seconds=cpu_before + time.process_time() - cpu_start,
            wall_seconds=wall_before + time.perf_counter() - wall_start, run=run,
        )
        return f"(checkpoint: epoch {progress['epoch']})"

    recorded = _read_info(out_dir)
    if epochs <= done and recorded is not None and recorded.get("epochs") == len(history):
        # Finished earlier: keep its record (device, timings, versions) - it may have run on another machine.
        return PretrainResult(out_dir, out_dir / BACKBONE_FILE, recorded, history, start_epoch)
    if epochs > done:
        resumed = f", from epoch {done + 1}" if done else ""
        train_epochs(
            network, loss_fn, batches, optimizer, epochs - done, scheduler=scheduler,
            steps_per_epoch=n_batches(len(pixels), batch_size, 0.0), on_epoch_end=on_epoch_end,
            description=f"pretrain {method} ({backbone}){resumed}", quiet=quiet,
        )
    from defectmine.pipeline.runinfo import environment  # the versions every run records

    versions = environment()
    # Where each stretch of epochs ran: a resumed run may have moved between machines.
    stretch = {"epochs": [done, len(history)], "device": str(torch_device), "threads": torch.get_num_threads(),
               "cuda": versions["cuda"], "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    info = {
        **run,
        "recipe": network.recipe(),
        "feature_channels": network.feature_channels,
        "feature_stride": network.feature_stride,
        "epochs": len(history),
        "final_loss": history[-1] if history else None,
        "loss_history": history,
        "cpu_seconds": cpu_before + time.process_time() - cpu_start,
        "wall_seconds": wall_before + time.perf_counter() - wall_start,
        "threads": torch.get_num_threads(),
        "device": str(torch_device),
        "source": source,
        "load_with": f"build_backbone({backbone!r}, {spec.channels}, stride={stride}, width={width}, "
                     f"weights={str(out_dir / BACKBONE_FILE)!r})",
        "versions": versions,
        "created": stretch["created"],
        "stretches": [*(recorded or {}).get("stretches", []), stretch] if done else [stretch],
    }
    weights = save_backbone(network.backbone, out_dir, info)
    return PretrainResult(out_dir, weights, info, history, start_epoch)


def _read_info(out_dir: Path) -> dict | None:
    try:
        return json.loads((out_dir / INFO_FILE).read_text())
    except (OSError, ValueError):
        return None


def save_backbone(module: torch.nn.Module, out_dir: Path, info: dict) -> Path:
    """Write `module`'s state dict to out_dir/backbone.safetensors and `info` to out_dir/pretrain.json."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / BACKBONE_FILE
    save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, str(weights),
              metadata={"format": "defectmine-backbone", "backbone": info["backbone"]})
    (out_dir / INFO_FILE).write_text(json.dumps(info, indent=2))
    return weights


def resolve_init_weights(init_weights: str | Path | None, backbone: str, width: int, stride: int) -> str | Path | None:
    """The weights file (or "pretrained") to start from; a pretraining folder means its backbone.safetensors.

    When pretrain.json sits beside the file, its architecture must match: the factory would otherwise
    load the few tensors whose shapes happen to agree and silently leave the rest random.
    """
    if init_weights is None or init_weights == "pretrained":
        return init_weights
    path = Path(init_weights).expanduser()
    if path.is_dir():
        path = path / BACKBONE_FILE
    if not path.is_file():
        raise ConfigError(
            f"init_weights={str(init_weights)!r}: no such weights file. Fix: pass a .safetensors/.pt file or "
            f"a pretraining output folder (holding {BACKBONE_FILE})."
        )
    info_path = path.parent / INFO_FILE
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        theirs = {key: info.get(key) for key in ("backbone", "width", "stride")}
        ours = {"backbone": backbone, "width": width, "stride": stride}
        if theirs != ours:
            raise ConfigError(
                f"init_weights {path} are for {_describe(theirs)} (see {info_path}), not {_describe(ours)}. "
                f"Fix: pretrain with {_describe(theirs)}, or start from other weights."
            )
    return path


def _describe(arch: dict) -> str:
    return f"backbone {arch['backbone']!r}, width={arch['width']}, stride={arch['stride']}"


def _check_settings(epochs: int, batch_size: int, lr: float) -> None:
    if epochs < 1:
        raise ConfigError(f"pretrain: epochs={epochs} must be at least 1.")
    if batch_size < 2:
        raise ConfigError(f"pretrain: batch_size={batch_size} must be at least 2 (batch norm needs 2 images).")
    if not lr > 0:
        raise ConfigError(f"pretrain: lr={lr} must be positive, e.g. 1e-3.")


def _check_images(images: ImageDataset) -> None:
    if not isinstance(images, ImageDataset):
        raise DataError(f"pretrain takes an ImageDataset, got {type(images).__name__}.")
    if len(images) < 2:
        raise DataError(
            f"pretrain: {len(images)} image(s) to learn from. Fix: give at least 2 (in practice hundreds) of "
            "unlabelled images."
        )


def _check_same_run(folder: Path, saved: dict, wanted: dict, done: int, epochs: int) -> None:
    changed = [f"{key}: {saved.get(key)!r} -> {wanted[key]!r}" for key in wanted if saved.get(key) != wanted[key]]
    if changed:
        raise ConfigError(
            f"{folder} holds a pretraining run with other settings ({'; '.join(changed)}). Fix: use the same "
            "settings to continue it, another output folder, or resume=False (--no-resume) to start over."
        )
    if done > epochs:
        raise ConfigError(
            f"{folder} has already done {done} epochs, more than epochs={epochs}. Fix: ask for at least {done} "
            "epochs, or resume=False (--no-resume) to start over."
        )


def _cosine(epoch: int, epochs: int) -> float:
    return 0.5 * (1 + math.cos(math.pi * min(epoch, epochs) / epochs))


def _fingerprint(images: ImageDataset) -> str:
    """sha256 of the prepared pixels: a resumed run must see the same data."""
    return hashlib.sha256(images.raw_images().contiguous().numpy().tobytes()).hexdigest()[:16]
