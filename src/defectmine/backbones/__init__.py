"""Feature extractors shared by every detector: a small from-scratch CNN, a small ViT, and timm models."""

from defectmine.backbones.factory import Backbone, build_backbone, load_weights_file, list_backbones

__all__ = ["Backbone", "build_backbone", "load_weights_file", "list_backbones"]
