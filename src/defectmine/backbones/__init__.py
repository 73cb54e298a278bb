"""Feature extractors shared by every detector and segmenter: a small from-scratch CNN, a small ViT, and
timm models, as multi-scale encoders (`build_encoder`) or single-map backbones (`build_backbone`)."""

from defectmine.backbones.encoder import Encoder
from defectmine.backbones.factory import Backbone, build_backbone, build_encoder, list_backbones, load_weights_file

__all__ = ["Backbone", "Encoder", "build_backbone", "build_encoder", "load_weights_file", "list_backbones"]
