"""COCO masks through pycocotools: a mask to a compressed RLE annotation, and any COCO segmentation
(compressed RLE, uncompressed RLE, polygons) back to a mask of its image's size."""

from __future__ import annotations

import numpy as np

from defectmine.errors import ConfigError, DataError

INSTALL = "pip install 'defectmine[label]'  (or: pip install pycocotools)"


def mask_api():
    """pycocotools.mask, or a ConfigError with the pip command when it is not installed."""
    try:
        from pycocotools import mask
    except ImportError:
        raise ConfigError(f"COCO masks need pycocotools, which is not installed. Fix: {INSTALL}") from None
    return mask


def encode_mask(mask: np.ndarray) -> dict:
    """COCO compressed RLE of a 2-d mask: {"size": [h, w], "counts": str} (JSON-ready)."""
    rle = mask_api().encode(np.asfortranarray(np.asarray(mask) > 0, dtype=np.uint8))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def rle_area_bbox(rle: dict) -> tuple[int, list[float]]:
    """(area in pixels, [x, y, width, height]) of a COCO RLE from `encode_mask`."""
    api = mask_api()
    coded = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    return int(api.area(coded)), [float(v) for v in api.toBbox(coded)]


def decode_segmentation(segmentation, height: int, width: int, *, source: str) -> np.ndarray:
    """bool (height, width) mask of a COCO `segmentation`: RLE (compressed or not) or polygons.

    Raises DataError naming `source` for an RLE of another size or a segmentation that is neither."""
    api = mask_api()
    try:
        if isinstance(segmentation, dict):
            size = segmentation.get("size")
            if list(size or []) != [height, width]:
                raise DataError(
                    f"{source}: the mask is {size} (height, width) but its image is [{height}, {width}]. "
                    "Fix: the annotation belongs to an image of another size; check image_id and the image's "
                    "width/height."
                )
            counts = segmentation["counts"]
            rle = api.frPyObjects(segmentation, height, width) if isinstance(counts, list) else \
                {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        elif isinstance(segmentation, list) and segmentation:
            polygons = segmentation if isinstance(segmentation[0], list) else [segmentation]
            rle = api.merge(api.frPyObjects([[float(v) for v in p] for p in polygons], height, width))
        else:
            raise TypeError
        return api.decode(rle).astype(bool)
    except DataError:
        raise
    except (TypeError, KeyError, ValueError, AttributeError):
        raise DataError(
            f"{source}: 'segmentation' is neither an RLE ({{size, counts}}) nor a list of polygons. "
            "Fix: export the file again as COCO (instance segmentation)."
        ) from None
