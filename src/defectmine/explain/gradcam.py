"""Grad-CAM (Selvaraju et al., ICCV 2017) as a pure function, and its use on our trained detectors.

For a layer with activations A (N, K, h, w) and a per-image target y (N,), the map is

    L = ReLU(sum_k alpha_k A_k),   alpha_k = mean over (h, w) of dy / dA_k

upsampled (bilinear) to the input size. The ReLU keeps the regions that push the target up.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from defectmine.data.images import normalise
from defectmine.errors import ConfigError, DataError

Target = Callable[[object], torch.Tensor] | int


def grad_cam(
    model: nn.Module,
    layer: nn.Module,
    images: torch.Tensor,
    target: Target,
    *,
    normalize: bool = True,
) -> torch.Tensor:
    """Grad-CAM maps (N, H, W) of `images` (N, C, H, W, float, as the model takes them) at `layer`.

    Args:
        model: the network; it runs in eval mode here, and every submodule's train/eval mode is
            restored afterwards. Gradients are taken with respect to the layer's output only, so no
            parameter's ``.grad`` is touched.
        layer: a submodule of `model` whose output is a (N, K, h, w) map and which runs once per forward.
        target: what to explain. A callable mapping the model's output to one scalar per image (N,),
            e.g. ``lambda out: out.logits[:, 1]``; or an int, the class index into (N, C) logits.
        normalize: divide each image's map by its maximum, giving [0, 1] (an all-zero map stays zero);
            False returns the raw ReLU'd weighted sum, comparable across images.

    Works when called inside ``torch.inference_mode()`` (as detectors score): it turns inference
    mode off and gradients on locally, and clones the images so they are normal tensors.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        raise DataError(
            "grad_cam: images must be a float tensor (N, C, H, W) as the model takes them. "
            "Fix: normalise uint8 pixels first (defectmine.data.images.normalise)."
        )
    select = _target_function(target)
    modes = [(module, module.training) for module in model.modules()]
    captured: list[torch.Tensor] = []

    def keep_output(module, inputs, output):
        if not isinstance(output, torch.Tensor) or output.ndim != 4:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise ConfigError(
                f"grad_cam: layer {type(module).__name__} gives {shape}, not a (N, K, h, w) map. "
                "Fix: pick a convolutional layer (or a module whose output is a feature map)."
            )
        captured.append(output)
        # Later layers get a copy: an in-place op downstream (e.g. ReLU(inplace=True)) would otherwise
        # overwrite the activations we differentiate with respect to.
        return output.clone()

    handle = layer.register_forward_hook(keep_output)
    try:
        with torch.inference_mode(False), torch.enable_grad():
            model.eval()
            # requires_grad on the input makes every activation depend on it, so frozen layers work too.
            x = images.clone().requires_grad_(True)
            scores = select(model(x))
            activations = _single_activation(captured, scores, len(x))
            (grads,) = torch.autograd.grad(scores.sum(), activations, allow_unused=True)
            if grads is None:
                raise ConfigError(
                    "grad_cam: the target does not depend on this layer. Fix: pick a layer the target is computed from."
                )
            cam = torch.relu(gradient_weighted_sum(activations, grads)).detach()
            if cam.shape[-2:] != images.shape[-2:]:
                cam = F.interpolate(cam[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
            if normalize:
                peak = cam.flatten(1).amax(dim=1).clamp_min(torch.finfo(cam.dtype).tiny)
                cam = cam / peak[:, None, None]
    finally:
        handle.remove()
        for module, training in modes:
            module.training = training
    return cam


def gradient_weighted_sum(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """sum_k alpha_k A_k (N, h, w) with alpha_k = mean over (h, w) of dy / dA_k: the Grad-CAM sum
    before its nonlinearity (`grad_cam` applies ReLU; the VAE's attention, a sigmoid). Differentiable,
    so a loss may be put on it when `grads` come from ``torch.autograd.grad(..., create_graph=True)``."""
    if activations.ndim != 4 or grads.shape != activations.shape:
        raise ConfigError(
            f"gradient_weighted_sum: activations {tuple(activations.shape)} and gradients {tuple(grads.shape)} "
            "must both be (N, K, h, w)."
        )
    return (grads.mean(dim=(2, 3), keepdim=True) * activations).sum(dim=1)


def _target_function(target: Target) -> Callable[[object], torch.Tensor]:
    if callable(target):
        return target
    if isinstance(target, bool) or not isinstance(target, int):
        raise ConfigError(f"grad_cam: target={target!r} must be a class index (int) or a callable output -> (N,).")

    def class_logit(output):
        if not isinstance(output, torch.Tensor) or output.ndim != 2 or not -output.shape[1] <= target < output.shape[1]:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise ConfigError(
                f"grad_cam: target={target} needs (N, C) logits with more than {target} classes; the model gives "
                f"{shape}. Fix: pass a callable, e.g. target=lambda out: out.logits[:, 1]."
            )
        return output[:, target]

    return class_logit


def _single_activation(captured: list[torch.Tensor], scores, n: int) -> torch.Tensor:
    if not isinstance(scores, torch.Tensor) or scores.shape != (n,):
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ConfigError(f"grad_cam: the target gives {shape}; it must give one scalar per image, ({n},).")
    if len(captured) != 1:
        raise ConfigError(
            f"grad_cam: the layer ran {len(captured)} times in one forward pass; it must run exactly once. "
            "Fix: pass a submodule of the model that is used once (not shared)."
        )
    return captured[0]


class _ImageScore(nn.Module):
    """A trained detector's image score as a module: forward(batch) = detector.image_scores_of(batch)."""

    def __init__(self, detector):
        super().__init__()
        self.network = detector.network_  # registered, so grad_cam sets and restores its modes
        self._image_scores_of = detector.image_scores_of

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self._image_scores_of(batch)


def last_convolution(network: nn.Module) -> nn.Conv2d:
    """The last ``nn.Conv2d`` (in registration order) of a detector network's backbone.

    The backbone is ``network.backbone`` (FCDD) or ``network.backbones[0]`` (classifier, LIAC: the first
    of LIAC's two); a network with neither is searched whole.
    """
    backbone = getattr(network, "backbone", None)
    if backbone is None and isinstance(getattr(network, "backbones", None), nn.ModuleList):
        backbone = network.backbones[0]
    convolutions = [m for m in (backbone or network).modules() if isinstance(m, nn.Conv2d)]
    if not convolutions:
        raise ConfigError(f"{type(network).__name__} has no convolution to explain. Fix: pass layer= explicitly.")
    return convolutions[-1]


def detector_gradcam(detector, images, layer: nn.Module | None = None, *, normalize: bool = True) -> np.ndarray:
    """Grad-CAM maps (N, H, W) float32 of a fitted trained detector's image score.

    Args:
        detector: a fitted detector with ``network_``, ``spec_`` and ``image_scores_of`` (fcdd,
            classifier, liac: every `models.trained.TrainedDetector`).
        images: uint8 pixels (N, C, H, W) at the detector's spec, or an ImageDataset; normalised here
            with the detector's spec and scored in batches of its ``score_batch_size``.
        layer: the module to explain at; default `last_convolution(detector.network_)`.
        normalize: as in `grad_cam` ([0, 1] per image, or raw).
    """
    pixels = detector._as_uint8_batch(images)  # checks that it is fitted and that the spec matches
    layer = last_convolution(detector.network_) if layer is None else layer
    model = _ImageScore(detector)
    step = detector.config.score_batch_size
    maps = []
    for start in range(0, len(pixels), step):
        batch = normalise(pixels[start:start + step].to(detector.device), detector.spec_)
        batch = batch.contiguous(memory_format=torch.channels_last)
        maps.append(grad_cam(model, layer, batch, lambda score: score, normalize=normalize).cpu())
    if not maps:
        return np.zeros((0, *detector.spec_.size), dtype=np.float32)
    return torch.cat(maps).numpy().astype(np.float32)
