"""The labelling loop over a project folder: `init` (pool and classes), `next` (a ranked batch to label,
as a folder, a CSV and Label Studio tasks with model proposals), `import` (Label Studio exports, COCO
files) and the manifest that `defectmine fit --data` and `segment fit --data` read.

A project folder holds labels.db (the store), batches/round-NNNN/ and export/ (manifest.csv, masks/).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from defectmine.data._messages import listing
from defectmine.data.manifest import write_manifest
from defectmine.data.masks import BACKGROUND
from defectmine.data.records import ANOMALOUS, NORMAL, Record
from defectmine.errors import ConfigError, DataError
from defectmine.labelling import labelstudio
from defectmine.labelling.imports import NORMAL_CHOICES, Annotation, read_export
from defectmine.labelling.store import LabelStore, NewLabel, PoolImage

DB_FILE = "labels.db"
BATCHES, EXPORT = "batches", "export"
BUILTIN_STRATEGIES = ("random", "score")


def store_path(project: Path | str) -> Path:
    return Path(project).expanduser() / DB_FILE


def open_store(project: Path | str) -> LabelStore:
    """The project's store; a DataError naming the folder when there is none."""
    return LabelStore(store_path(project))


# init ----------------------------------------------------------------------------------------------
def check_class_names(classes: list[str]) -> list[str]:
    """Class names as given (stripped), refused when empty, repeated, 'background' or 'normal'."""
    names = [c.strip() for c in classes if c.strip()]
    bad = [c for c in names if c.lower() in (BACKGROUND, NORMAL) or names.count(c) > 1]
    if bad:
        raise ConfigError(f"--classes: {', '.join(sorted(set(bad)))} cannot be defect classes (reserved or repeated). "
                          "Fix: list each defect class once, e.g. --classes crack,scratch.")
    return names


def image_size(path: str) -> tuple[int, int]:
    """(height, width) as read_image returns the image (EXIF rotation applied), from the header only."""
    with Image.open(path) as im:
        width, height = im.size
        if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # rotated by 90 degrees
            width, height = height, width
    return height, width


def init_project(project: Path | str, images: str | None, classes: list[str], who: str) -> dict:
    """Create the project (or extend it: new images and new classes are added, nothing is removed)."""
    from defectmine.pipeline.predict_inputs import list_inputs

    names = check_class_names(classes)
    path = store_path(project)
    if not path.exists():
        if not names:
            raise ConfigError("--classes is needed for a new project. Fix: e.g. --classes crack,scratch.")
        LabelStore.create(path, names).close()
    with LabelStore(path) as store:
        new_classes = store.add_classes(names)
        new_images, unreadable = 0, []
        if images is not None:
            entries = []
            for item in list_inputs(images).items:
                try:
                    entries.append((item.path, *image_size(item.path)))
                except (OSError, UnidentifiedImageError) as err:
                    unreadable.append(f"{item.path}: {err}")
            if unreadable:
                raise DataError(f"{len(unreadable)} image(s) cannot be read; nothing was added:\n{listing(unreadable)}\n"
                                "Fix: remove or repair them, then run init again.")
            new_images = store.add_images(entries, who)
        return {"pool": len(store.images()), "new_images": new_images, "classes": store.classes,
                "new_classes": new_classes}


# next ----------------------------------------------------------------------------------------------
def rank(strategy: str, candidates: list[PoolImage], size: int, *, scores: np.ndarray | None,
         seed: int, store: LabelStore | None = None, assist=None, minority: str | None = None,
         embed_weights: Path | None = None) -> list[tuple[int, float | None]]:
    """The batch: (image id, score) of `size` candidates in the order to label them.

    "random": a seeded shuffle; "score": highest anomaly score first. Any other name is an acquisition
    function of `defectmine.active` (minority, bald, entropy, anomaly, kcenter), the single place where
    they plug in (`labelling.acquisition.registry_order`: the project's pool and labels, embeddings,
    the model's scores; `minority` names the class wanted by "minority")."""
    if strategy == "random":
        order = np.random.default_rng(seed).permutation(len(candidates))
    elif strategy == "score":
        if scores is None:
            raise ConfigError("--strategy score ranks by a model's anomaly score. Fix: pass --model RUN/model.")
        order = np.argsort(-scores, kind="stable")
    else:
        if store is None:
            raise ConfigError(f"--strategy {strategy!r} needs the project's store (labels so far).")
        from defectmine.labelling.acquisition import registry_order

        order = registry_order(strategy, store, candidates, size, assist=assist, seed=seed, minority=minority,
                               embed_weights=embed_weights)
    order = order[:size]
    return [(candidates[i].id, None if scores is None else float(scores[i])) for i in order]


@dataclass
class BatchSummary:
    """What `next` wrote: the round, its folder, images and how many got proposals (and why not)."""

    round_id: int
    folder: Path
    n_images: int
    n_proposals: int
    note: str = ""


def next_batch(project: Path | str, size: int, *, strategy: str = "random", model: Path | None = None,
               seed: int = 0, who: str = "", again: bool = False, proposal_class: str | None = None,
               proposal_threshold: float | None = None, url_prefix: str = "/data/local-files/?d=",
               minority: str | None = None, embed_weights: Path | None = None) -> BatchSummary:
    """Rank the unlabelled pool, write batches/round-NNNN/ (batch.csv, tasks.json, label_config.xml,
    images/) and record the round. Images asked in an earlier round and still unlabelled are left out
    unless `again`. The folder appears whole; the round is recorded after it, so an interrupted `next`
    is simply run again."""
    from defectmine.labelling.assist import ModelAssist

    if size < 1:
        raise ConfigError(f"--size {size}: ask for at least one image.")
    with open_store(project) as store:
        candidates = store.unlabelled()
        if not again:
            asked = {row[0] for row in store.db.execute("SELECT image_id FROM round_images")}
            candidates = [c for c in candidates if c.id not in asked]
        if not candidates:
            raise DataError(f"{project}: no unlabelled image left to ask for (asked ones are left out; "
                            "--again asks for them once more). Fix: add images with `label init --images`.")
        assist = ModelAssist(model, store) if model is not None else None
        scores = assist.image_scores(candidates) if assist is not None else None
        entries = rank(strategy, candidates, size, scores=scores, seed=seed, store=store, assist=assist,
                       minority=minority, embed_weights=embed_weights)
        by_id = {c.id: c for c in candidates}
        batch = [by_id[i] for i, _ in entries]
        regions, note = {}, ""
        if assist is not None:
            regions, note = assist.regions(batch, proposal_class or store.classes[0], proposal_threshold)
        round_id = store.next_round_number()
        folder = Path(project).expanduser() / BATCHES / f"round-{round_id:04d}"
        _write_batch(folder, batch, entries, regions, store.classes, url_prefix, assist)
        store.add_round(strategy, entries, seed=seed, who=who, model=assist.version if assist else None)
    return BatchSummary(round_id, folder, len(batch), sum(len(r) for r in regions.values()), note)


def _write_batch(folder: Path, batch: list[PoolImage], entries, regions: dict, classes: list[str],
                 url_prefix: str, assist) -> None:
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "images").mkdir(parents=True)
    tasks = []
    with (partial / "batch.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["rank", "image_id", "path", "score", "proposals"])
        for rank_, (image, (_, score)) in enumerate(zip(batch, entries)):
            copy = partial / "images" / f"{image.id:06d}_{Path(image.path).name}"
            try:
                os.link(image.path, copy)
            except OSError:  # another file system: copy instead
                shutil.copy2(image.path, copy)
            writer.writerow([rank_, image.id, image.path, "" if score is None else f"{score:.6g}",
                             len(regions.get(image.id, []))])
            tasks.append(labelstudio.task(image, url_prefix + Path(image.path).as_posix().lstrip("/"),
                                          regions.get(image.id) if assist else None,
                                          assist.version[1][:12] if assist else ""))
    (partial / "tasks.json").write_text(json.dumps(tasks))
    (partial / "label_config.xml").write_text(labelstudio.label_config(classes))
    if folder.exists():  # left by a `next` interrupted before it recorded its round: not in the store
        shutil.rmtree(folder)
    partial.rename(folder)


# import --------------------------------------------------------------------------------------------
def import_file(project: Path | str, file: Path | str, *, fmt: str = "auto", who: str = "") -> dict:
    """Apply a Label Studio JSON export or a COCO file: all of it in one transaction, or (any problem)
    none of it; a file imported before changes nothing. The manifest is rewritten afterwards."""
    parsed = read_export(file, fmt)
    with open_store(project) as store:
        labels = _resolve(parsed.annotations, store)
        written, same = store.apply_import(parsed.sha256, str(parsed.path.resolve()), parsed.format, labels, who)
    manifest = export_manifest(project)
    return {"file": str(parsed.path), "format": parsed.format, "written": written, "unchanged": same,
            "without_annotation": parsed.without_annotation, "manifest": str(manifest)}


_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")  # Label Studio prefixes uploaded files with 8 hex digits


def _resolve(annotations: list[Annotation], store: LabelStore) -> list[NewLabel]:
    images = store.images()
    by_id = {im.id: im for im in images}
    by_path = {os.path.normpath(im.path): im for im in images}
    by_name: dict[str, list[PoolImage]] = {}
    for im in images:
        by_name.setdefault(Path(im.path).name, []).append(im)
    classes = store.classes
    problems, labels, seen = [], [], {}
    for ann in annotations:
        image = by_id.get(ann.image_id) if ann.image_id is not None else _by_reference(ann.image, by_path, by_name)
        if image is None:
            problems.append(f"{ann.where}: image {ann.image_id if ann.image_id is not None else ann.image!r} "
                            "is not in the pool (add it with `label init --images`)")
            continue
        if image.id in seen:
            problems.append(f"{ann.where}: image {image.path} is annotated twice in this file (also {seen[image.id]})")
            continue
        seen[image.id] = ann.where
        if ann.height is not None and (ann.height, ann.width) != (image.height, image.width):
            problems.append(f"{ann.where}: mask of {ann.width}x{ann.height} px, but {image.path} is "
                            f"{image.width}x{image.height}")
            continue
        named = {c for c, _ in ann.regions} | {c for c in ann.choices if c.lower() not in NORMAL_CHOICES}
        unknown = sorted(named - set(classes))
        if unknown:
            problems.append(f"{ann.where}: class(es) {', '.join(map(repr, unknown))} not in the project "
                            f"({', '.join(classes)}; add with `label init --classes`)")
            continue
        labels.append(_label(ann, image, classes))
    if problems:
        raise DataError(f"{len(problems)} problem(s); nothing was imported:\n{listing(problems)}\n"
                        "Fix: correct the file (or the project: pool, classes) and import it again.")
    return labels


def _by_reference(reference: str, by_path: dict, by_name: dict) -> PoolImage | None:
    ref = reference.split("?d=", 1)[-1]
    if os.path.normpath(ref) in by_path:
        return by_path[os.path.normpath(ref)]
    if os.path.normpath("/" + ref) in by_path:
        return by_path[os.path.normpath("/" + ref)]
    name = Path(ref).name
    matches = by_name.get(name) or by_name.get(_UPLOAD_PREFIX.sub("", name)) or []
    tails = [m for m in matches if Path(m.path).as_posix().endswith(ref)] or matches
    return tails[0] if len(tails) == 1 else None


def _label(ann: Annotation, image: PoolImage, classes: list[str]) -> NewLabel:
    mask = None
    if ann.regions:
        mask = np.zeros((image.height, image.width), dtype=np.uint8)
        for name, region in ann.regions:
            mask[region] = classes.index(name) + 1
    areas = np.bincount(mask.ravel(), minlength=len(classes) + 1)[1:] if mask is not None else np.zeros(len(classes))
    chosen = [c for c in ann.choices if c in classes]
    if areas.any():
        label, defect_class = ANOMALOUS, classes[int(np.argmax(areas))]
    elif chosen:
        label, defect_class = ANOMALOUS, chosen[0]
    else:
        label, defect_class, mask = NORMAL, "", None
    return NewLabel(image.id, label, defect_class, mask, ann.annotator, ann.labelled_at)


# export and status ---------------------------------------------------------------------------------
def export_manifest(project: Path | str, out: Path | str | None = None) -> Path:
    """Write the labelled images as a manifest (manifest.csv + masks/) that `defectmine fit --data` and
    `segment fit --data` read: single-class masks black/white, several classes as class indices of the
    manifest's class list. The folder is replaced whole. Returns the CSV path."""
    from defectmine.data.masks import class_list

    out = (Path(out).expanduser() if out is not None else Path(project).expanduser() / EXPORT).resolve()
    with open_store(project) as store:
        images = {im.id: im for im in store.images()}
        current = store.current_labels()
        project_classes = store.classes
    records = [Record(Path(images[i].path), lab.label, lab.defect_class) for i, lab in current.items()]
    manifest_classes = class_list(records) if records else (BACKGROUND,)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "masks").mkdir(parents=True)
    for k, (image_id, lab) in enumerate(current.items()):
        if lab.mask is None or not lab.mask.any():
            continue
        present = [project_classes[v - 1] for v in np.unique(lab.mask) if v]
        if len(present) == 1:
            pixels = np.where(lab.mask > 0, 255, 0).astype(np.uint8)
        else:
            missing = [c for c in present if c not in manifest_classes]
            if missing:
                raise DataError(f"{images[image_id].path}: its mask holds class(es) {', '.join(missing)} that no "
                                "image is labelled as, so a manifest cannot index them. Fix: label at least one image "
                                "with each of these classes.")
            lut = np.array([0] + [manifest_classes.index(c) if c in manifest_classes else 0 for c in project_classes],
                           dtype=np.uint8)
            pixels = lut[lab.mask]
        path = partial / "masks" / f"{image_id:06d}.png"
        Image.fromarray(pixels).save(path)
        records[k] = Record(records[k].path, lab.label, lab.defect_class, mask=out / "masks" / path.name)
    write_manifest(records, partial / "manifest.csv", root=out)
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    partial.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return out / "manifest.csv"


def status(project: Path | str) -> dict:
    """Counts of the project's store (see `LabelStore.counts`) and its classes."""
    with open_store(project) as store:
        return {**store.counts(), "classes": store.classes}
