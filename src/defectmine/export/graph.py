"""The torch modules that get exported: raw uint8 pixels in, the checkpoint's outputs out.

Each wraps a loaded model and calls the very ops its `score` / `predict` runs (normalisation, the
network, the receptive-field upsampling of the maps), so the exported graph agrees with the checkpoint
by construction; `build.export_model` still measures the difference before it writes a file.
"""

from __future__ import annotations

import torch
from torch import nn

from defectmine.data.images import normalise
from defectmine.errors import ConfigError
from defectmine.models.trained import native_maps_at


class DetectorGraph(nn.Module):
    """uint8 (N, C, H, W) -> (score (N,), map (N, H, W)) of a trained detector: `TrainedDetector.score`
    with native maps (normalise -> `_scores` -> `native_maps_at` the input size)."""

    def __init__(self, detector) -> None:
        super().__init__()
        if not hasattr(detector, "_forward_scores"):
            raise ConfigError(f"detector {detector.name!r} cannot be exported: it scores outside a single torch "
                              "network. Fix: predict with its model folder.")
        self.network = detector.network_  # registered here so that its weights travel with the graph
        self.detector, self.spec = detector, detector.spec_

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = normalise(images, self.spec)
        if getattr(self.detector, "maps_need_gradients", False):
            # score only: the map output is a (N, 1, 1) placeholder that the runtime never returns
            image = self.detector.image_scores_of(batch)
            return image, image.new_zeros((image.shape[0], 1, 1))
        if getattr(self.detector.config, "tta", False):  # as `score` does: the mean over the four flips
            image, maps = self.detector._flip_averaged_scores(batch)
        else:
            image, maps = self.detector._scores(batch)
        return image, native_maps_at(maps, tuple(self.spec.size))


class SegmenterGraph(nn.Module):
    """uint8 (N, C, H, W) -> (score (N,), map (N, H, W), probabilities (N, K + 1, H, W)) of a segmenter:
    `Segmenter.predict` (per-class sigmoids, background = 1 - the largest) and, as segment runs score
    images (`ClassMaps.anomaly_scores("max")`), map = the largest defect-class probability, score = its
    maximum over the image."""

    def __init__(self, segmenter) -> None:
        super().__init__()
        self.network, self.spec = segmenter.network_, segmenter.spec_

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        probabilities = torch.sigmoid(self.network(normalise(images, self.spec)).float())
        anomaly = probabilities.amax(dim=1)
        background = 1.0 - anomaly[:, None]
        return anomaly.flatten(1).amax(dim=1), anomaly, torch.cat([background, probabilities], dim=1)


def graph_for(model, kind: str) -> nn.Module:
    """The exportable module of a loaded detector or segmenter, in eval mode on the CPU."""
    graph = DetectorGraph(model) if kind == "detector" else SegmenterGraph(model)
    return graph.to("cpu").eval()
