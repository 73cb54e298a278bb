"""Label Studio tasks for a batch: one task per image (with our image id in its data, so that an export
finds its way back), model proposals as pre-annotations (brush RLE, one region per proposal with its
confidence), and the labelling config the tasks are written for."""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

import numpy as np

from defectmine.labelling.brush import mask_to_rle
from defectmine.labelling.store import PoolImage

FROM_NAME, TO_NAME, CHOICES_NAME = "defect", "image", "verdict"


def label_config(classes: list[str]) -> str:
    """The Label Studio labelling config (XML): a brush label per class and a 'normal' choice."""
    labels = "\n".join(f"    <Label value={quoteattr(c)}/>" for c in classes)
    return (f'<View>\n  <Image name="{TO_NAME}" value="$image" zoom="true"/>\n'
            f'  <BrushLabels name="{FROM_NAME}" toName="{TO_NAME}">\n{labels}\n  </BrushLabels>\n'
            f'  <Choices name="{CHOICES_NAME}" toName="{TO_NAME}" choice="single">\n'
            '    <Choice value="normal"/>\n  </Choices>\n</View>\n')


def brush_region(mask: np.ndarray, class_name: str, confidence: float | None = None, region_id: str = "r0") -> dict:
    """A `brushlabels` result of a bool mask of the image's full size (height, width)."""
    height, width = mask.shape
    result = {"id": region_id, "type": "brushlabels", "from_name": FROM_NAME, "to_name": TO_NAME,
              "original_width": int(width), "original_height": int(height), "image_rotation": 0,
              "value": {"format": "rle", "rle": mask_to_rle(mask), "brushlabels": [class_name]}}
    if confidence is not None:
        result["score"] = float(confidence)
    return result


def task(image: PoolImage, url: str, regions: list[dict] | None = None, model_version: str = "") -> dict:
    """One task: data.image is `url`, data.defectmine_id the pool id; regions become one prediction."""
    out = {"data": {"image": url, "defectmine_id": image.id}}
    if regions is not None:
        scores = [r["score"] for r in regions if "score" in r]
        out["predictions"] = [{"model_version": model_version, "score": max(scores, default=0.0), "result": regions}]
    return out
