"""Text prompts through CLIPSeg (`transformers`), from a local model folder; nothing is downloaded.

    backend = load_clipseg("models/clipseg-rd64-refined")   # save_pretrained folder + its tokenizer
    result = prompt_segment(backend, images, ["a crack", "a scratch"], ["a smooth metal surface"])

Images are brought to the model's input side (config.vision_config.image_size), as RGB with CLIP's
normalisation; each query's logits go through a sigmoid and back to the image size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from defectmine.errors import ConfigError

PIP = "pip install 'defectmine[prompt]'  (or: pip install transformers)"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ConfigError(f"the CLIPSeg backend needs the transformers package. Fix: {PIP}") from None
    return transformers


def load_clipseg(folder: str | Path, device: str | torch.device = "cpu") -> "CLIPSegBackend":
    """A CLIPSeg backend from a local folder holding the model (config.json + weights) and its tokenizer."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ConfigError(f"{folder}: no config.json. Fix: pass a folder written by CLIPSeg's save_pretrained "
                          "(e.g. a local copy of CIDAS/clipseg-rd64-refined).")
    transformers = _transformers()
    try:
        model = transformers.CLIPSegForImageSegmentation.from_pretrained(str(folder), local_files_only=True)
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as error:
        raise ConfigError(f"{folder}: could not load a CLIPSeg model and tokenizer ({error}). Fix: save both "
                          "into this folder (model.save_pretrained(folder); tokenizer.save_pretrained(folder)).") from None
    return CLIPSegBackend(model, tokenizer, device=device)


def _has_dropout(model: nn.Module) -> bool:
    configs = [model.config, getattr(model.config, "text_config", None), getattr(model.config, "vision_config", None)]
    rates = [getattr(c, name, 0) or 0 for c in configs if c is not None for name in ("attention_dropout", "dropout")]
    modules = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    return any(r > 0 for r in [*rates, *modules])


class CLIPSegBackend:
    """Per-query sigmoid maps of a CLIPSegForImageSegmentation model (see the module docstring)."""

    def __init__(self, model: nn.Module, tokenizer, *, device: str | torch.device = "cpu") -> None:
        self.model = model.eval().to(device)
        self.tokenizer, self.device = tokenizer, torch.device(device)
        self.has_dropout = _has_dropout(model)

    def pixel_values(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) float: RGB (grayscale repeated), resized to the model's side, CLIP-normalised."""
        x = images_uint8.to(self.device, torch.float32) / 255
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        side = self.model.config.vision_config.image_size
        x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
        mean = torch.tensor(CLIP_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=self.device).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.no_grad()
    def query_maps(self, images_uint8: torch.Tensor, prompts: Sequence[str], *, stochastic: bool = False) -> torch.Tensor:
        """(queries, N, H, W) sigmoid maps of every prompt on every image."""
        if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise ConfigError(f"CLIPSeg prompts must be non-empty texts, got {list(prompts)!r}.")
        tokens = self.tokenizer(list(prompts), padding=True, return_tensors="pt").to(self.device)
        pixels = self.pixel_values(images_uint8)
        self.model.train(stochastic)  # dropout on only for MC passes
        try:
            out = []
            for image in pixels:  # CLIPSeg pairs image i with prompt i: repeat the image per prompt
                logits = self.model(pixel_values=image[None].expand(len(prompts), -1, -1, -1), **tokens).logits
                out.append(logits.reshape(len(prompts), *logits.shape[-2:]))
        finally:
            self.model.eval()
        maps = torch.sigmoid(torch.stack(out, dim=1))
        return F.interpolate(maps, size=images_uint8.shape[-2:], mode="bilinear", align_corners=False).clamp(0, 1).cpu()

    def maps(self, images_uint8: torch.Tensor, foreground: Sequence[str], background: Sequence[str], *,
             stochastic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        both = self.query_maps(images_uint8, [*foreground, *background], stochastic=stochastic)
        return both[:len(foreground)], both[len(foreground):]
