"""Paint defects into normal images: RePaint-style masked sampling with the class-conditional model.

`repaint` denoises with DDIM conditioned on a defect class; after every step the pixels outside the
mask are replaced by the normal image noised to the same level (RePaint, Lugmayr et al. 2022), so the
result keeps the normal image outside the mask and is generated inside it. `resample` > 1 repeats each
step after re-noising it (RePaint's resampling, jump length 1), which blends the seam better.
`strength` < 1 starts from an initial image (e.g. a real defect crop pasted into the normal image)
noised part-way (SDEdit): "conditioning on a defect crop".

`synthesize_defects` places the masks with `defectmine.data.injection.inject` (the shapes of real
training defects of the class, flipped, rotated and moved), then repaints them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from defectmine.data.injection import DefectPool, inject
from defectmine.errors import ConfigError
from defectmine.synth.diffusion import DefectDiffusion, to_model_range, to_uint8


def _check(images_uint8, masks, model: DefectDiffusion) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.as_tensor(images_uint8)
    masks = torch.as_tensor(np.asarray(masks)).bool()
    side, channels = model.config.image_size, model.config.channels
    if images.dtype != torch.uint8 or tuple(images.shape[1:]) != (channels, side, side):
        raise ConfigError(f"repaint takes (N, {channels}, {side}, {side}) uint8 images (the model's size), got "
                          f"{images.dtype} {tuple(images.shape)}.")
    if tuple(masks.shape) != (images.shape[0], side, side):
        raise ConfigError(f"repaint masks must be (N, {side}, {side}) like the images, got {tuple(masks.shape)}.")
    return images, masks


def repaint(model: DefectDiffusion, images_uint8, masks, defect_class: str, *, steps: int = 25, resample: int = 1,
            strength: float = 1.0, init_uint8=None, seed: int = 0) -> torch.Tensor:
    """Images (N, C, S, S) uint8 with the `masks` (N, S, S) region painted as `defect_class`."""
    images, masks = _check(images_uint8, masks, model)
    if not 0 < strength <= 1:
        raise ConfigError(f"strength={strength!r} must be in (0, 1].")
    if steps < 1 or resample < 1:
        raise ConfigError(f"steps={steps} and resample={resample} must be >= 1.")
    label = model.class_index(defect_class)
    scheduler = model.ddim(steps)
    timesteps = scheduler.timesteps[int(round(steps * (1 - strength))):]
    generator = torch.Generator().manual_seed(seed)
    device, n = model.device, len(images)
    known = to_model_range(images)
    keep = (~masks)[:, None].float()
    noise = torch.randn(known.shape, generator=generator)
    if strength < 1:
        start = to_model_range(init_uint8 if init_uint8 is not None else images)
        x = scheduler.add_noise(start, noise, torch.full((n,), int(timesteps[0])))
    else:
        x = noise
    labels = torch.full((n,), label, dtype=torch.long, device=device)
    alphas = scheduler.alphas_cumprod
    with torch.no_grad():
        for i, t in enumerate(timesteps):
            prev = int(timesteps[i + 1]) if i + 1 < len(timesteps) else None
            for r in range(resample):
                eps = model.unet(x.to(device), t, class_labels=labels).sample.cpu()
                x = scheduler.step(eps, t, x).prev_sample
                if prev is not None:
                    known_t = scheduler.add_noise(known, torch.randn(known.shape, generator=generator), torch.full((n,), prev))
                else:
                    known_t = known
                x = keep * known_t + (1 - keep) * x
                if r + 1 < resample and prev is not None:  # back to step t's noise level and try again
                    ratio = alphas[int(t)] / alphas[prev]
                    x = ratio.sqrt() * x + (1 - ratio).sqrt() * torch.randn(x.shape, generator=generator)
    return to_uint8(x)


def synthesize_defects(model: DefectDiffusion, normal_uint8, pool: DefectPool, defect_class: str, n: int, *,
                       steps: int = 25, resample: int = 1, strength: float = 1.0, seed: int = 0,
                       batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """n images (n, C, S, S) uint8 and their class-index masks (n, S, S) of `defect_class`.

    Normal images are drawn (with replacement) from `normal_uint8`; the mask shapes come from the
    pool's crops of the class (placed by `inject`); with strength < 1 the pasted crop (Poisson
    blending) is the starting point, else only its shape is used.
    """
    if n < 1:
        raise ConfigError(f"n={n!r}: ask for at least one synthetic image.")
    if defect_class not in pool.classes:
        raise ConfigError(f"class {defect_class!r} has no defects in the pool. Fix: use one of {', '.join(pool.classes[1:])}.")
    c = pool.classes.index(defect_class)
    if not pool.crops[c]:
        raise ConfigError(f"class {defect_class!r} has no defect region in the training images, so no mask shape to paint.")
    rng = np.random.default_rng(seed)
    normal = np.asarray(normal_uint8)
    chosen = normal[rng.integers(len(normal), size=n)]
    empty = np.zeros((n, *chosen.shape[-2:]), dtype=np.int64)
    pasted, masks, _ = inject(chosen, empty, pool, rng, methods=("poisson",), classes=[c])
    images = []
    for start in range(0, n, batch_size):
        part = slice(start, start + batch_size)
        images.append(repaint(model, chosen[part], masks[part] == c, defect_class, steps=steps, resample=resample,
                              strength=strength, init_uint8=pasted[part], seed=seed + start).numpy())
    return np.concatenate(images), masks


def class_names(classes: Sequence[str]) -> tuple[str, ...]:
    """The diffusion model's classes for a dataset's ("background", *defects): normal takes index 0."""
    return ("normal", *classes[1:])
