"""Model-assisted labelling in `label next`: a saved detector ranks the pool by its anomaly score and
proposes masks (its maps -> `proposals.propose`) as Label Studio pre-annotations.

The proposal threshold is chosen on the project's own labelled masks (the labels collected so far play
the part of validation data); with none yet, `--proposal-threshold` is used, else no proposals.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from defectmine.data.images import prepare_mask
from defectmine.errors import DataError
from defectmine.labelling.labelstudio import brush_region
from defectmine.labelling.proposals import ProposalSettings, choose_settings, propose, source_maps, to_image_size
from defectmine.labelling.store import LabelStore, PoolImage

BATCH = 32


class ModelAssist:
    """A saved detector (a run's model/ folder) used to rank and pre-annotate pool images."""

    def __init__(self, model_dir: Path, store: LabelStore, source: str = "native") -> None:
        from defectmine.models.base import WEIGHTS_FILE
        from defectmine.models.registry import load_detector
        from defectmine.pipeline.run_folder import file_sha256

        model_dir = Path(model_dir).expanduser().resolve()
        self.detector = load_detector(model_dir)
        self.version = (str(model_dir), file_sha256(model_dir / WEIGHTS_FILE))
        self.store, self.source = store, source

    def _pixels(self, images: list[PoolImage]) -> torch.Tensor:
        from defectmine.labelling.acquisition import decode_pool

        return decode_pool(images, self.detector.spec_)

    def image_scores(self, images: list[PoolImage]) -> np.ndarray:
        """Anomaly scores (N,) of pool images, decoded and scored BATCH at a time."""
        scores = [self.detector.score(self._pixels(images[s:s + BATCH]), maps=False).image
                  for s in range(0, len(images), BATCH)]
        return np.concatenate(scores) if scores else np.zeros(0)

    def maps(self, images: list[PoolImage]) -> np.ndarray:
        return np.concatenate([source_maps(self.detector, self._pixels(images[s:s + BATCH]), self.source)
                               for s in range(0, len(images), BATCH)])

    def settings(self, threshold: float | None) -> tuple[ProposalSettings | None, str]:
        """Proposal settings from the labelled masks of the store, else from `threshold`, else None."""
        labelled = {i: lab for i, lab in self.store.current_labels().items() if lab.mask is not None and lab.mask.any()}
        if labelled:
            images = [im for im in self.store.images() if im.id in labelled]
            spec = self.detector.spec_
            masks = np.stack([prepare_mask(labelled[im.id].mask > 0, spec) for im in images])
            return choose_settings(self.maps(images), masks), f"threshold chosen on {len(images)} labelled mask(s)"
        if threshold is not None:
            return ProposalSettings(threshold=threshold), f"threshold {threshold} (--proposal-threshold)"
        return None, "no proposals: no labelled masks yet to choose the threshold on; pass --proposal-threshold"

    def regions(self, batch: list[PoolImage], class_name: str, threshold: float | None) -> tuple[dict, str]:
        """image id -> Label Studio brush regions of its proposals (full image size), and a note."""
        settings, note = self.settings(threshold)
        if settings is None or not batch:
            return {}, note
        out = {}
        for image, amap in zip(batch, self.maps(batch)):
            full = to_image_size(amap, self.detector.spec_, image.height, image.width)
            found = propose(full, _scaled(settings, image, self.detector.spec_.size))
            out[image.id] = [brush_region(p.mask, class_name, p.confidence, f"p{k}") for k, p in enumerate(found)]
        return out, note


def _scaled(settings: ProposalSettings, image: PoolImage, size: tuple[int, int]) -> ProposalSettings:
    """The settings' minimum area, given at the model's size, in pixels of the full image."""
    from dataclasses import replace

    factor = (image.height * image.width) / (size[0] * size[1])
    return replace(settings, min_area=max(1, round(settings.min_area * factor)),
                   open_px=max(0, round(settings.open_px * factor ** 0.5)),
                   close_px=max(0, round(settings.close_px * factor ** 0.5)))
