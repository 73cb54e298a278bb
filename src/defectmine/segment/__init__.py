"""Segmenters: per-class defect maps from class masks (U-Net via segmentation-models-pytorch).

    from defectmine.segment import create_segmenter, load_segmenter
    unet = create_segmenter("unet", encoder="resnet18", loss="bce_dice").fit(train, val=val)
    maps = unet.predict(test)                     # ClassMaps (N, C + 1, H, W), background first
    labels = maps.class_index(unet.threshold_, how="max")
"""

from defectmine.segment.config import SegmenterConfig
from defectmine.segment.losses import SEGMENTATION_LOSSES, segmentation_loss
from defectmine.segment.networks import SUGGESTED_ENCODERS, build_unet
from defectmine.segment.registry import SEGMENTERS, create_segmenter, load_segmenter, segmenter_class
from defectmine.segment.segmenter import AugmentBatch, Segmenter
from defectmine.segment.unet import UNet, UNetConfig

__all__ = [
    "SEGMENTATION_LOSSES", "SEGMENTERS", "SUGGESTED_ENCODERS", "AugmentBatch", "Segmenter", "SegmenterConfig",
    "UNet", "UNetConfig", "build_unet", "create_segmenter", "load_segmenter", "segmentation_loss", "segmenter_class",
]
