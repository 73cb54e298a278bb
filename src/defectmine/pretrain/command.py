"""What `defectmine pretrain` calls: gather unlabelled training images from anywhere, then `pretrain`."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from defectmine.data import BUILTIN_SETS, ImageDataset, ImageSpec, Record, fixed_split, read_manifest
from defectmine.errors import DataError
from defectmine.pretrain.run import DEFAULT_METHOD, DEFAULT_WIDTH, PretrainResult, pretrain

log = logging.getLogger(__name__)

# Pretraining may see the training pool (labels unused) but never the images metrics are computed on.
TRAINING_SPLITS = ("train", "train_anomalous", "")


def unlabelled_records(data: str) -> list[Record]:
    """Records to pretrain on; `data` is a folder, a CSV manifest, a built-in set, or several joined by '+'.

    Built-in sets give their fixed split's training images only (train and train_anomalous); manifests
    with a split column lose their val and test rows; a folder gives every image in it (the
    normal/anomalous layout or any layout). Labels are kept but unused. A path listed twice counts once.
    """
    parts = [data] if Path(data).exists() or "+" not in data else [p for p in data.split("+") if p]
    records: dict[str, Record] = {}
    for part in parts:
        for record in _records_of(part):
            records.setdefault(os.path.normpath(os.path.abspath(record.path)), record)
    if not records:
        raise DataError(f"{data}: no training images to pretrain on. Fix: pass a folder or manifest with images.")
    return list(records.values())


def _records_of(part: str) -> list[Record]:
    from defectmine.pipeline.data import list_images

    path = Path(part).expanduser()
    if part in BUILTIN_SETS:
        records = fixed_split(part)
    elif path.suffix.lower() == ".csv" and path.is_file():
        records = read_manifest(path)
    elif path.is_dir():
        return list_images(path)
    else:
        raise DataError(
            f"{part}: no such folder or manifest. Fix: pass a folder of images, a CSV manifest, a built-in set "
            f"({', '.join(BUILTIN_SETS)}), or several joined by '+' (e.g. magnetic_tile+elpv)."
        )
    kept = [r for r in records if r.split in TRAINING_SPLITS]
    if len(kept) < len(records):
        log.info("%s: pretraining on %d training images, leaving out %d val/test images",
                 part, len(kept), len(records) - len(kept))
    return kept


def pretrain_command(
    data: str,
    out: Path,
    method: str = DEFAULT_METHOD,
    *,
    backbone: str | None = None,
    width: int = DEFAULT_WIDTH,
    stride: int = 8,
    image_size: int = 128,
    channels: int = 1,
    resize: str = "stretch",
    epochs: int = 20,
    batch_size: int = 32,
    lr: float | None = None,
    seed: int = 0,
    device: str = "auto",
    init_weights: str | None = None,
    resume: bool = True,
    skip_bad: bool = False,
    quiet: bool = False,
) -> PretrainResult:
    """Pretrain a backbone on unlabelled images (self-supervised) for any detector to start from.

    DATA is a folder of images (any layout), a CSV manifest, a built-in set (magnetic_tile, elpv), or
    several joined by '+' (magnetic_tile+elpv). Labels are not used; built-in sets and manifests with a
    split column contribute their training images only, never val or test images.

    Writes OUT/backbone.safetensors and OUT/pretrain.json, and a checkpoint after every epoch: running
    the same command again continues from the last finished epoch (--no-resume starts over). Use the
    weights with the same backbone, width, stride, channels and image size (the defaults match FCDD's),
    e.g. `defectmine fit DATA --backbone-weights OUT/backbone.safetensors`.

    Methods: simsiam (siamese views, CNN; the default, chosen by `benchmarks/pretrain_benchmark.py
    --choose`), mim (masked image modelling, CNN) and mae (masked autoencoder, backbone vit_tiny).
    --init-weights starts from earlier
    weights (a file, an earlier OUT folder, or "pretrained" for a timm backbone): hierarchical
    pretraining, from broad data to the images of the task.
    """
    records = unlabelled_records(data)
    spec = ImageSpec(size=(image_size, image_size), channels=channels, resize=resize)
    images = ImageDataset(records, spec, skip_bad=skip_bad, quiet=quiet)
    return pretrain(
        images, out_dir=Path(out), method=method, backbone=backbone, width=width, stride=stride, epochs=epochs,
        batch_size=batch_size, lr=lr, seed=seed, device=device, init_weights=init_weights, resume=resume,
        source=data, quiet=quiet,
    )
