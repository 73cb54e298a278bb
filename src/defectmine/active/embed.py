"""Image embeddings for acquisition: one frozen encoder pass per pool, computed once and reused every round."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from defectmine.backbones import build_encoder
from defectmine.data import ImageDataset, normalise
from defectmine.errors import ConfigError
from defectmine.progress import track


def embed(dataset: ImageDataset, *, encoder: str = "cnn", weights: str | Path | None = None, width: int = 16,
          seed: int = 0, batch_size: int = 64, quiet: bool = True) -> np.ndarray:
    """(N, D) float32 embeddings of `dataset`: the global mean and the global max of every stage of a
    frozen multi-scale encoder, concatenated (the max keeps small defects that the mean would wash out).

    Args:
        encoder: any `build_encoder` name ("cnn", "vit_tiny", a timm name).
        weights: a local weights file (e.g. `defectmine pretrain`'s backbone.safetensors); None gives a
            fixed random encoder, drawn from `seed`: weak but free, and the same for every acquisition.
        width: base width of our "cnn" / "vit_tiny" encoders.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r} must be a positive integer, e.g. 64.")
    with torch.random.fork_rng(devices=[]):  # a fixed random encoder must not depend on earlier draws
        torch.manual_seed(seed)
        net = build_encoder(encoder, in_chans=dataset.spec.channels, width=width, weights=weights).eval()
    pixels = dataset.raw_images()
    rows = []
    with torch.no_grad():
        for start in track(range(0, len(pixels), batch_size), "embedding", quiet=quiet):
            maps = net(normalise(pixels[start:start + batch_size], dataset.spec))
            rows.append(torch.cat([torch.cat([m.mean(dim=(2, 3)), m.amax(dim=(2, 3))], dim=1) for m in maps], dim=1))
    return torch.cat(rows).numpy().astype(np.float32)
