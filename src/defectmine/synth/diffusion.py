"""A small class-conditional DDPM (diffusers `UNet2DModel` + `DDPMScheduler`), trained from scratch.

Class 0 is "normal" (defect-free images); classes 1.. are the defect classes, each image labelled
with its defect class. Sampling and inpainting (`defectmine.synth.inpaint`) use a `DDIMScheduler`
built from the training scheduler's config, so a few dozen steps suffice. The model is saved the
diffusers way (`unet/` with config.json + safetensors, `scheduler/`) plus `synth.json` (classes,
image size, channels); `DefectDiffusion.load` also takes a local pretrained pipeline folder of that
layout (a DDPMPipeline's save_pretrained) with a synth.json added.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from defectmine.errors import ConfigError
from defectmine.progress import track

PIP = "pip install 'defectmine[synth]'  (or: pip install diffusers)"
INFO = "synth.json"


def diffusers_module():
    """The diffusers package, or a ConfigError with the pip command."""
    try:
        import diffusers
    except ImportError:
        raise ConfigError(f"synthetic defects need the diffusers package. Fix: {PIP}") from None
    return diffusers


@dataclass
class DiffusionConfig:
    """How the from-scratch model is built and trained (validated at construction).

    image_size: side of the square images (a multiple of 2 ** (len(block_channels) - 1)).
    block_channels: UNet widths per resolution; the deepest level uses attention.
    train_steps: optimiser steps (batches), not epochs; timesteps: the DDPM noise schedule's length.
    """

    image_size: int = 64
    channels: int = 1
    block_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    train_steps: int = 300
    batch_size: int = 16
    lr: float = 3e-4
    timesteps: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        self.block_channels = tuple(int(c) for c in self.block_channels)
        levels = 2 ** (len(self.block_channels) - 1)
        if self.image_size < 8 or self.image_size % levels:
            raise ConfigError(f"image_size={self.image_size}: use a side >= 8 that is a multiple of {levels} "
                              f"(one halving per UNet level after the first).")
        if self.channels not in (1, 3):
            raise ConfigError(f"channels={self.channels}: use 1 (grayscale) or 3 (RGB).")
        for name in ("train_steps", "batch_size", "timesteps", "layers_per_block"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be >= 1.")
        if any(c < 8 or c % 8 for c in self.block_channels):
            raise ConfigError(f"block_channels={self.block_channels}: use multiples of 8 (GroupNorm groups).")


def _unet(config: DiffusionConfig, n_classes: int):
    diffusers = diffusers_module()
    levels = len(config.block_channels)
    return diffusers.UNet2DModel(
        sample_size=config.image_size, in_channels=config.channels, out_channels=config.channels,
        block_out_channels=config.block_channels, layers_per_block=config.layers_per_block,
        down_block_types=("DownBlock2D",) * (levels - 1) + ("AttnDownBlock2D",),
        up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (levels - 1),
        norm_num_groups=8, num_class_embeds=n_classes,
    )


def to_model_range(images_uint8) -> torch.Tensor:
    return torch.as_tensor(images_uint8).float() / 127.5 - 1


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


class DefectDiffusion:
    """A trained UNet + noise schedule over ("normal", *defect classes)."""

    def __init__(self, unet, scheduler, classes: Sequence[str], config: DiffusionConfig) -> None:
        self.unet, self.scheduler, self.classes, self.config = unet.eval(), scheduler, tuple(classes), config

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def class_index(self, name: str) -> int:
        if name not in self.classes:
            raise ConfigError(f"class {name!r} is not one the diffusion model knows. Fix: use one of "
                              f"{', '.join(self.classes[1:]) or '(none: trained on normal images only)'}.")
        return self.classes.index(name)

    def ddim(self, steps: int):
        """A DDIM scheduler of the training schedule, set to `steps` steps."""
        scheduler = diffusers_module().DDIMScheduler.from_config(self.scheduler.config)
        scheduler.set_timesteps(steps)
        return scheduler

    def save(self, folder: Path | str) -> Path:
        folder = Path(folder)
        self.unet.save_pretrained(folder / "unet")
        self.scheduler.save_pretrained(folder / "scheduler")
        info = {"classes": list(self.classes), "config": asdict(self.config)}
        (folder / INFO).write_text(json.dumps(info, indent=2))
        return folder

    @classmethod
    def load(cls, folder: Path | str, device: str | torch.device = "cpu") -> "DefectDiffusion":
        folder = Path(folder)
        if not (folder / INFO).is_file() or not (folder / "unet").is_dir():
            raise ConfigError(f"{folder}: not a synthesis model (needs unet/, scheduler/ and {INFO}). Fix: pass "
                              "the model/ folder that `defectmine synthesize` wrote, or a DDPMPipeline folder "
                              f"with a {INFO} naming its classes.")
        diffusers = diffusers_module()
        info = json.loads((folder / INFO).read_text())
        unet = diffusers.UNet2DModel.from_pretrained(folder / "unet", low_cpu_mem_usage=False).to(device)
        scheduler = diffusers.DDPMScheduler.from_pretrained(folder / "scheduler")
        return cls(unet, scheduler, info["classes"], DiffusionConfig(**info["config"]))


def train_diffusion(images_uint8, labels, classes: Sequence[str], config: DiffusionConfig, *,
                    device: str | torch.device = "cpu", quiet: bool = True) -> DefectDiffusion:
    """Train from scratch on (N, C, S, S) uint8 images with class indices `labels` into `classes`
    (classes[0] is normal). Images of another size are resized. Seeded by config.seed."""
    images = torch.as_tensor(images_uint8)
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if images.ndim != 4 or images.dtype != torch.uint8 or images.shape[1] != config.channels:
        raise ConfigError(f"train_diffusion takes (N, {config.channels}, H, W) uint8 images, got "
                          f"{images.dtype} {tuple(images.shape)}.")
    if len(labels) != len(images) or len(images) == 0 or labels.min() < 0 or labels.max() >= len(classes):
        raise ConfigError(f"train_diffusion: need one label in 0..{len(classes) - 1} per image "
                          f"({len(images)} images, {len(labels)} labels).")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    x = to_model_range(images)
    if x.shape[-2:] != (config.image_size, config.image_size):
        x = F.interpolate(x, size=(config.image_size,) * 2, mode="bilinear", align_corners=False)
    diffusers = diffusers_module()
    unet = _unet(config, len(classes)).to(device).train()
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=config.timesteps)
    optimiser = torch.optim.AdamW(unet.parameters(), lr=config.lr)
    for _ in track(range(config.train_steps), description="diffusion training", quiet=quiet):
        batch = torch.randint(len(x), (config.batch_size,), generator=generator)
        clean, y = x[batch], labels[batch]
        if torch.rand(1, generator=generator) < 0.5:  # flips: cheap augmentation for few images
            clean = clean.flip(-1)
        noise = torch.randn(clean.shape, generator=generator)
        t = torch.randint(config.timesteps, (len(batch),), generator=generator)
        noisy = scheduler.add_noise(clean, noise, t)
        predicted = unet(noisy.to(device), t.to(device), class_labels=y.to(device)).sample
        loss = F.mse_loss(predicted, noise.to(device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    return DefectDiffusion(unet, scheduler, classes, config)
