"""`defectmine prompt-segment` on a folder: decode, segment with prompts, write masks, uncertainty, report.

Output folder: masks/<name>.png (0 / 255), uncertainty/<name>.png (the chosen uncertainty, colour-coded
on [0, 1]), scores.csv (per image: defect share of pixels, mean uncertainty overall and on the mask) and
report.html (per image: the image with the mask outlined, beside the uncertainty map).
"""

from __future__ import annotations

import html
import shutil
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from defectmine.data.images import IMAGE_SUFFIXES, ImageSpec, prepare_image, read_image
from defectmine.errors import ConfigError, DataError
from defectmine.explain.overlay import as_rgb_uint8, colorize
from defectmine.pipeline.predict_inputs import DecodedFiles, list_inputs
from defectmine.prompt.ensemble import PromptMaps
from defectmine.prompt.segment import PromptBackend, prompt_segment
from defectmine.prompt.visual import VisualQuery
from defectmine.report.files import encode_png, save_png, write_scores_csv
from defectmine.report.gallery import mask_outline, side_by_side
from defectmine.report.markup import img_tag, page_head, table_html

REPORT_IMAGES = 24
TILE_SIDE = 160


def parse_query(text: str) -> tuple[str, str]:
    """"NAME=VALUE" -> (NAME, VALUE); a bare VALUE is named by itself (a folder by its last part)."""
    name, sep, value = text.partition("=")
    if not sep:
        return Path(text.rstrip("/")).name or text, text
    if not name.strip() or not value.strip():
        raise ConfigError(f"query {text!r}: use NAME=FOLDER (visual prompts) or a text prompt.")
    return name.strip(), value.strip()


def visual_query(text: str, spec: ImageSpec, scale: float) -> VisualQuery:
    """A query from "NAME=FOLDER": every image in FOLDER is one example crop, resized by `scale`
    (the factor by which the segmented images are resized) and brought to the spec's channels."""
    name, folder = parse_query(text)
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise DataError(f"visual prompt {name!r}: {path} is not a folder. Fix: pass NAME=FOLDER with example crops "
                        f"({', '.join(IMAGE_SUFFIXES)}) of the concept inside.")
    examples = []
    for file in sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        pixels = read_image(file)
        size = (max(1, round(pixels.shape[0] * scale)), max(1, round(pixels.shape[1] * scale)))
        examples.append(prepare_image(pixels, ImageSpec(size=size, channels=spec.channels)))
    if not examples:
        raise DataError(f"visual prompt {name!r}: no images in {path}. Fix: put a few crops of the concept there.")
    return VisualQuery(name, examples)


def source_scale(data: str | Path, spec: ImageSpec) -> float:
    """How much the first image of `data` shrinks to reach the spec: crops are scaled alike."""
    first = read_image(list_inputs(data).items[0].path)
    return spec.size[0] / first.shape[0]


def _decode(data: str | Path, spec: ImageSpec, exclude: Path) -> tuple[list, torch.Tensor, list[dict]]:
    listing = list_inputs(data, exclude=exclude)
    decoded = DecodedFiles(listing.items, spec, None)
    kept, images, skipped = [], [], []
    for i in range(len(decoded)):
        item = decoded[i]
        if item.model_input is None:
            skipped.append({"path": listing.items[i].path, "reason": item.reason})
        else:
            kept.append(listing.items[i])
            images.append(torch.from_numpy(item.model_input))
    if not images:
        raise DataError(f"{data}: none of the images could be read. Fix: check the files.")
    return kept, torch.stack(images), skipped


def _tile(image: np.ndarray, mask: np.ndarray, uncertainty: np.ndarray) -> np.ndarray:
    rgb = cv2.resize(as_rgb_uint8(image), (TILE_SIDE, TILE_SIDE), interpolation=cv2.INTER_NEAREST)
    left = mask_outline(rgb, mask)
    right = cv2.resize(colorize(uncertainty, 0.0, 1.0, cmap="magma"), (TILE_SIDE, TILE_SIDE), interpolation=cv2.INTER_NEAREST)
    return side_by_side(left, right)


def write_report(path: Path, title: str, settings: dict, names: Sequence[str], images: torch.Tensor,
                 result: PromptMaps) -> Path:
    """report.html: settings, then per image the mask outline beside the uncertainty map."""
    tiles = []
    for i in range(min(len(names), REPORT_IMAGES)):
        png = encode_png(_tile(images[i].numpy(), result.mask[i], result.uncertainty[i]))
        tiles.append(f"<figure>{img_tag(png, names[i])}<figcaption>{html.escape(names[i])}</figcaption></figure>")
    body = (page_head(title) + table_html([settings])
            + f"<p>Left: the mask (foreground &gt; background) outlined in the image. Right: {result.kind} "
            "uncertainty, dark = certain, bright = uncertain (scale 0 to 1).</p>" + "\n".join(tiles) + "</body></html>")
    path.write_text(body, encoding="utf-8")
    return path


def prompt_segment_folder(backend: PromptBackend, data: str | Path, out: Path, foreground: Sequence,
                          background: Sequence, spec: ImageSpec, *, settings: dict, mc_samples: int = 0,
                          uncertainty: str = "entropy", seed: int = 0, overwrite: bool = False,
                          quiet: bool = True) -> dict:
    """Segment every image of `data` and write the output folder; returns a summary."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"{out} is not empty. Fix: pass an empty or new --out, or --overwrite.")
        shutil.rmtree(out)
    items, images, skipped = _decode(data, spec, out)
    result = prompt_segment(backend, images, foreground, background, mc_samples=mc_samples,
                            uncertainty=uncertainty, seed=seed, quiet=quiet)
    names, rows = [], []
    for i, item in enumerate(items):
        name = Path(item.path).stem
        names.append(name)
        save_png(out / "masks" / f"{name}.png", result.mask[i].astype(np.uint8) * 255)
        save_png(out / "uncertainty" / f"{name}.png", colorize(result.uncertainty[i], 0.0, 1.0, cmap="magma"))
        on_mask = result.uncertainty[i][result.mask[i]]
        rows.append({"path": item.path, "defect_share": float(result.mask[i].mean()),
                     "mean_uncertainty": float(result.uncertainty[i].mean()),
                     "mask_uncertainty": float(on_mask.mean()) if on_mask.size else ""})
    write_scores_csv(out / "scores.csv", rows)
    write_report(out / "report.html", "defectmine prompt-segment", settings, names, images, result)
    return {"images": len(items), "skipped": skipped, "out": out,
            "defect_share": float(result.mask.mean()), "mean_uncertainty": float(result.uncertainty.mean())}
