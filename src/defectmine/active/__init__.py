"""Active learning for imbalanced pools: which images to label next.

    from defectmine.active import acquire, embed
    features = embed(ImageDataset(records, ImageSpec(size=(128, 128), channels=1)))   # once per pool
    picks = acquire("minority", features=features, labelled=done, labels=their_labels, minority=2, k=20, seed=0)

`ACQUISITIONS` maps names to the functions behind one interface (`Acquisition.select(pool, k, rng)`);
`simulate` replays a labelling campaign on a fully labelled pool to compare them.
"""

from defectmine.active.base import Acquisition, Pool
from defectmine.active.embed import embed
from defectmine.active.functions import (
    AnomalyTopK,
    KCenterGreedy,
    MinorityDiscriminator,
    RandomAcquisition,
    knn_anomaly_scores,
)
from defectmine.active.registry import ACQUISITIONS, acquire, create
from defectmine.active.simulate import SimulationConfig, simulate
from defectmine.active.uncertainty import BALD, PredictiveEntropy, bald, predictive_entropy

__all__ = [
    "ACQUISITIONS",
    "BALD",
    "Acquisition",
    "AnomalyTopK",
    "KCenterGreedy",
    "MinorityDiscriminator",
    "Pool",
    "PredictiveEntropy",
    "RandomAcquisition",
    "SimulationConfig",
    "acquire",
    "bald",
    "create",
    "embed",
    "knn_anomaly_scores",
    "predictive_entropy",
    "simulate",
]
