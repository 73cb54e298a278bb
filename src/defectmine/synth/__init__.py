"""Synthetic defect images from a small diffusion model (issue 19, part 2).

`train_diffusion` fits a class-conditional DDPM (diffusers, imported lazily) on normal and labelled
defect images; `synthesize_defects` paints defects of a chosen class into normal images (RePaint-style
masked sampling, mask shapes from real training defects) and returns images + masks;
`write_synthetic_defects` writes them into the folder layout that detectors and segmenters read.
"""

from defectmine.synth.diffusion import DefectDiffusion, DiffusionConfig, train_diffusion
from defectmine.synth.inpaint import class_names, repaint, synthesize_defects
from defectmine.synth.output import write_synthetic_defects

__all__ = ["DefectDiffusion", "DiffusionConfig", "class_names", "repaint", "synthesize_defects", "train_diffusion",
           "write_synthetic_defects"]
