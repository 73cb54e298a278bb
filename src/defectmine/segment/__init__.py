"""Segmenters: per-class defect maps from class masks (U-Net via segmentation-models-pytorch).

    from defectmine.segment import create_segmenter, load_segmenter
    unet = create_segmenter("unet", encoder="resnet18", loss="bce_dice").fit(train, val=val)
    maps = unet.predict(test)                     # ClassMaps (N, C + 1, H, W), background first
    labels = maps.class_index(unet.threshold_, how="max")
"""

from defectmine._lazy import lazy_exports

# Imported on first use: the detectors that train a U-Net (segdec, draem) import this package's pure
# modules (networks, losses, augment), while the segmenters import `models` (base, training); an eager
# __init__ would tie the two packages into an import cycle.
_EXPORTS = {
    "SEGMENTATION_LOSSES": "losses", "SEGMENTERS": "registry", "SUGGESTED_ENCODERS": "networks",
    "AugmentBatch": "segmenter", "Segmenter": "segmenter", "SegmenterConfig": "config", "UNet": "unet",
    "UNetConfig": "unet", "build_unet": "networks", "create_segmenter": "registry", "load_segmenter": "registry",
    "segmentation_loss": "losses", "segmenter_class": "registry",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
