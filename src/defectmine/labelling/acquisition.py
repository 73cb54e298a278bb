"""`label next --strategy NAME` for the acquisition functions of `defectmine.active`: the project's
pool (labelled and candidate images) becomes an `active.Pool` - embeddings from a frozen encoder
(`active.embed`; our self-supervised weights with --embed-weights), the labels collected so far as class
ids (0 normal, i the project's class i, one more id for "anomalous" without a class), the model's anomaly
scores when a model is given - and `active.acquire` ranks the candidates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from defectmine.data.images import ImageSpec
from defectmine.errors import ConfigError, DataError
from defectmine.labelling.store import LabelStore, PoolImage

#: The images' size and channels for the embeddings: what the active-learning benchmark measured.
EMBED_SPEC = ImageSpec(size=(128, 128), channels=1)


def decode_pool(images: list[PoolImage], spec: ImageSpec) -> torch.Tensor:
    """uint8 (N, C, H, W) pixels of pool images at `spec` (predict's decoding); a DataError naming an
    unreadable file."""
    from defectmine.pipeline.predict_inputs import DecodedFiles, PredictInput

    decoded = DecodedFiles([PredictInput(im.path) for im in images], spec, None)
    out = []
    for i, image in enumerate(images):
        item = decoded[i]
        if item.model_input is None:
            raise DataError(f"{image.path}: cannot be read ({item.reason}). Fix: repair or replace it.")
        out.append(torch.from_numpy(item.model_input))
    return torch.stack(out) if out else torch.zeros((0, spec.channels, *spec.size), dtype=torch.uint8)


def class_ids(store: LabelStore, image_ids: list[int]) -> np.ndarray:
    """The current label of each image as a class id: 0 normal, i for the project's class i (1-based),
    len(classes) + 1 for "anomalous" without a class."""
    current, classes = store.current_labels(), store.classes
    ids = []
    for image_id in image_ids:
        label = current[image_id]
        if label.label == "normal":
            ids.append(0)
        else:
            ids.append(classes.index(label.defect_class) + 1 if label.defect_class in classes else len(classes) + 1)
    return np.asarray(ids, dtype=np.int64)


def registry_order(strategy: str, store: LabelStore, candidates: list[PoolImage], size: int, *, assist, seed: int,
                   minority: str | None = None, embed_weights: Path | None = None) -> np.ndarray:
    """Positions in `candidates`, best first, chosen by the acquisition function `strategy`."""
    from defectmine.active import acquire
    from defectmine.active.registry import create

    function = create(strategy)  # unknown names: ConfigError listing the known ones
    labelled_ids = sorted(store.current_labels())
    by_id = {image.id: image for image in store.images()}
    pool = [by_id[i] for i in labelled_ids] + list(candidates)
    needs = set(function.needs)
    features = scores = None
    if "features" in needs:
        from defectmine.active.embed import embed
        from defectmine.data.dataset import ImageDataset

        pixels = decode_pool(pool, EMBED_SPEC)
        features = embed(ImageDataset.from_tensor(pixels, EMBED_SPEC), weights=embed_weights, seed=seed)
    if "scores" in needs:
        if assist is None:
            raise ConfigError(f"--strategy {strategy} ranks by a model's anomaly scores. Fix: pass --model RUN/model.")
        scores = assist.image_scores(pool)
    minority_id = None
    if "minority" in needs:
        if minority not in store.classes:
            raise ConfigError(f"--strategy {strategy} looks for the images of one class: pass --minority with one of "
                              f"the project's classes ({', '.join(store.classes)}); got {minority!r}.")
        minority_id = store.classes.index(minority) + 1
    n_labelled = len(labelled_ids)
    order = acquire(strategy, features=features, scores=scores, labelled=np.arange(n_labelled),
                    labels=class_ids(store, labelled_ids), minority=minority_id, k=size, seed=seed)
    return np.asarray(order, dtype=int) - n_labelled
