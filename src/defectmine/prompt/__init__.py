"""Prompted segmentation with query ensembles and uncertainty (issue 19, part 1).

Two backends behind one interface (`defectmine.prompt.segment`): CLIPSeg text prompts from a local
`transformers` model folder (`clipseg`, imported lazily), and offline visual prompts, a few example
crops per concept matched against our encoders' features (`visual`, torch only). The ensemble and its
uncertainty (`ensemble`) are shared.
"""

from defectmine.prompt.ensemble import UNCERTAINTIES, PromptMaps, binary_entropy, combine
from defectmine.prompt.segment import PromptBackend, prompt_segment
from defectmine.prompt.visual import VisualPromptBackend, VisualQuery

__all__ = ["UNCERTAINTIES", "PromptBackend", "PromptMaps", "VisualPromptBackend", "VisualQuery", "binary_entropy",
           "combine", "load_clipseg", "prompt_segment"]


def load_clipseg(folder, device="cpu"):
    """See `defectmine.prompt.clipseg.load_clipseg` (imported here lazily: it needs transformers)."""
    from defectmine.prompt.clipseg import load_clipseg as load

    return load(folder, device=device)
