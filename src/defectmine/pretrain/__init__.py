"""Self-supervised pretraining on unlabelled inspection images, for backbones every detector can load.

    result = pretrain(ImageDataset(records, spec), out_dir="weights/", method="mim", epochs=20)
    FCDD(backbone_weights=str(result.weights)).fit(normal, anomalous)

    pretrain_command("magnetic_tile+elpv", Path("weights/"))   # what `defectmine pretrain` runs

Methods (`METHODS`): "mim" masked image modelling on a CNN, "mae" masked autoencoder on a small ViT
("vit_tiny"), "simsiam" siamese views. `init_weights` continues from earlier weights (hierarchical
pretraining: broad data first, then the task's own images).
"""

from defectmine.pretrain.command import pretrain_command, unlabelled_records
from defectmine.pretrain.methods import METHODS, PretrainMethod, method_class
from defectmine.pretrain.run import BACKBONE_FILE, DEFAULT_METHOD, INFO_FILE, PretrainResult, pretrain

__all__ = [
    "BACKBONE_FILE",
    "DEFAULT_METHOD",
    "INFO_FILE",
    "METHODS",
    "PretrainMethod",
    "PretrainResult",
    "method_class",
    "pretrain",
    "pretrain_command",
    "unlabelled_records",
]
