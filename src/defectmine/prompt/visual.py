"""Visual prompts, offline: a few examples per concept matched against our encoders' features.

A query is a `VisualQuery`: a name ("crack", "background tile") and a few examples, each an image
with an optional mask of the concept's pixels (no mask: the whole image is the concept, e.g. a crop).
The query's prototype is the mean encoder feature over its examples' concept pixels. An image pixel's
map value for a query is its share in a softmax over all queries (foreground and background) of
cos(f - c, prototype - c) / temperature (match="prototype"), or of the same with the most similar single
example cell in place of the prototype (match="nearest", a small memory bank per query, as PatchCore's
nearest neighbour), where c, the mean of
the prototypes of all queries of the call, centres the (ReLU, all-positive) features so that cosine
similarities spread over [-1, 1]. MC dropout: with `dropout` > 0, stochastic passes drop feature
channels (element-wise) before the similarity, a cheap head-only dropout on a dropout-free encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from defectmine.backbones.encoder import Encoder
from defectmine.data.images import ImageSpec, normalise
from defectmine.errors import ConfigError

MIN_SIDE = 32  # small crops are enlarged to this side so that stride-8 features still see a few cells
FEATURE_STRIDE = 4
MATCHES = ("prototype", "nearest")  # every selected encoder map is resized to image size / 4 and concatenated


@dataclass
class VisualQuery:
    """One concept: `examples` are uint8 (C, H, W) arrays; `masks` (optional) bool (H, W) per example."""

    name: str
    examples: list[np.ndarray]
    masks: list[np.ndarray | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.examples:
            raise ConfigError(f"visual query {self.name!r} has no example images. Fix: give at least one crop.")
        if not self.masks:
            self.masks = [None] * len(self.examples)
        if len(self.masks) != len(self.examples):
            raise ConfigError(f"visual query {self.name!r}: {len(self.examples)} examples but {len(self.masks)} masks.")
        for example, mask in zip(self.examples, self.masks):
            if mask is not None and (mask.shape != example.shape[-2:] or not mask.any()):
                raise ConfigError(f"visual query {self.name!r}: a mask must have its example's size and mark some pixels.")


class VisualPromptBackend:
    """Prototype similarity on an encoder's multi-scale features (see the module docstring)."""

    def __init__(self, encoder: Encoder, spec: ImageSpec, *, temperature: float = 0.1, dropout: float = 0.0,
                 match: str = "prototype", device: str | torch.device = "cpu") -> None:
        if match not in MATCHES:
            raise ConfigError(f"match={match!r} is unknown. Fix: use one of {', '.join(MATCHES)}.")
        if not temperature > 0:
            raise ConfigError(f"temperature={temperature!r} must be > 0.")
        if not 0 <= dropout < 1:
            raise ConfigError(f"dropout={dropout!r} must be in [0, 1).")
        self.encoder = encoder.eval().to(device)
        self.spec, self.temperature, self.dropout, self.device = spec, temperature, dropout, torch.device(device)
        self.match = match

    @property
    def has_dropout(self) -> bool:
        return self.dropout > 0

    def features(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """(N, D, H / 4, W / 4): every encoder map resized to a quarter of the image and concatenated."""
        height, width = images_uint8.shape[-2:]
        size = (max(1, height // FEATURE_STRIDE), max(1, width // FEATURE_STRIDE))
        x = normalise(images_uint8.to(self.device), self.spec)
        maps = [F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in self.encoder(x)]
        # Each stage is normalised on its own, so the deep stages' large activations do not drown the rest.
        return torch.cat([F.normalize(m, dim=1) for m in maps], dim=1)

    def example_features(self, query: VisualQuery) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, D) features of every feature cell of the examples and (M,) the share of each cell inside the
        concept's mask (1 everywhere for crops without a mask)."""
        vectors, weights = [], []
        for example, mask in zip(query.examples, query.masks):
            image = torch.as_tensor(np.ascontiguousarray(example))[None]
            mask_t = torch.ones(image.shape[-2:]) if mask is None else torch.as_tensor(mask, dtype=torch.float32)
            scale = max(1.0, MIN_SIDE / min(image.shape[-2:]))
            if scale > 1:
                size = [round(s * scale) for s in image.shape[-2:]]
                image = F.interpolate(image.float(), size=size, mode="bilinear", align_corners=False).round().to(torch.uint8)
                mask_t = F.interpolate(mask_t[None, None], size=size, mode="nearest")[0, 0]
            feats = self.features(image)[0]
            weight = F.adaptive_avg_pool2d(mask_t[None, None].to(feats), feats.shape[-2:])[0, 0]
            if weight.sum() <= 0:  # a mask thinner than one feature cell: take its nearest cells
                weight = (weight >= weight.max()).to(feats)
            vectors.append(feats.flatten(1).T)
            weights.append(weight.flatten())
        return torch.cat(vectors), torch.cat(weights)

    def prototype(self, query: VisualQuery) -> torch.Tensor:
        """(D,): the mean feature over the concept's pixels of every example."""
        vectors, weights = self.example_features(query)
        return (vectors * weights[:, None]).sum(0) / weights.sum()

    @torch.no_grad()
    def maps(self, images_uint8: torch.Tensor, foreground: Sequence[VisualQuery], background: Sequence[VisualQuery],
             *, stochastic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        queries = [*foreground, *background]
        examples = [self.example_features(q) for q in queries]
        prototypes = torch.stack([(v * w[:, None]).sum(0) / w.sum() for v, w in examples])
        centre = prototypes.mean(0)
        feats = self.features(images_uint8)
        if stochastic and self.dropout:
            feats = F.dropout(feats, p=self.dropout, training=True)
        feats = F.normalize(feats - centre[None, :, None, None], dim=1)
        if self.match == "prototype":
            cosine = torch.einsum("ndhw,qd->qnhw", feats, F.normalize(prototypes - centre, dim=1))
        else:  # the nearest example cell inside the concept (cells at least half inside its mask)
            cosine = torch.stack([
                torch.einsum("ndhw,md->nhwm", feats, F.normalize(v[w >= 0.5 * w.max()] - centre, dim=1)).amax(-1)
                for v, w in examples])
        # A softmax over all queries, not a sigmoid per query: independent sigmoids of similar cosines all
        # saturate near 1, which leaves foreground / (foreground + background) at 0.5 everywhere.
        maps = torch.softmax(cosine / self.temperature, dim=0)
        maps = F.interpolate(maps, size=images_uint8.shape[-2:], mode="bilinear", align_corners=False).clamp(0, 1)
        return maps[:len(foreground)].cpu(), maps[len(foreground):].cpu()
