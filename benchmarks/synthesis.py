"""Issue 19 on Magnetic Tile (fixed split): prompted segmentation ensembles, and synthetic defects for FCDD.

Part "prompt": visual prompts (backend b) on our SSL encoder (a short `mim` pretraining of the small CNN
on the training normals): 5 foreground queries (each the defect masks of 2 training anomalies) and 5
background queries (each 2 training normals); pixel IoU and AUROC of the ensemble vs the 5 single
(foreground i, background i) pairs on the test masks, and the AUROC with which each uncertainty
(entropy, spread, MC dropout) finds the wrongly classified pixels.

Part "synth": FCDD (and, with `--models fcdd unet`, a U-Net segmenter) at K = 10 real labelled defects,
alone and with N extra synthetic defects per run (N = 100 / 400): painted by the class-conditional DDPM
(trained from scratch on the training normals and the same 10 defects), or pasted by cut-paste / Poisson
injection from the same 10 defects. The segmenter is scored on the test masks (IoU eq. 8 over the
defective test images, as the segmentation benchmark) and on image AUROC of its largest class probability.

Resumable: every row is a JSON file under benchmarks/results/synthesis/ (delete it to re-run that row);
the pretrained encoder and the diffusion model are kept under runs/bench/synthesis/.

    python benchmarks/synthesis.py                                   # CPU size: 64 px, 300 diffusion steps
    python benchmarks/synthesis.py --image-size 128 --train-steps 8000 --device cuda   # the GPU size
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from _table import machine_description, replace_section, update_summary  # noqa: E402
from segmentation import CNN_OPTIONS  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "synthesis"
WORK = REPO / "runs" / "bench" / "synthesis"
FCDD_PARAMS = {"width": 8, "lr": 1e-3, "batch_size": 32}  # fcdd_benchmark.py's, epochs set per run
# The segmenter (`--models unet`): our small CNN under SegDec's light decoder, focal loss (the loss with the
# best mean val IoU in the segmentation benchmark), no injection (the extra defects are the variable).
UNET_PARAMS = {"encoder": "cnn", **CNN_OPTIONS, "loss": "focal", "eval_every": 2}
N_QUERIES = 5


def _data(k: int | None, size: int, seed: int = 0):
    from defectmine.pipeline import RunConfig, prepare_data

    return prepare_data(RunConfig(data="magnetic_tile", k=k, image_size=size, seed=seed, quiet=True))


def _cached(path: Path, make) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    row = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row, indent=2))
    return row


# ---------------------------------------------------------------- part 1: prompted segmentation
def _encoder(data, args):
    from defectmine.backbones import build_encoder
    from defectmine.pretrain import pretrain

    folder = WORK / f"pretrain-{args.pretrain_method}-{args.image_size}px-e{args.pretrain_epochs}"
    if not (folder / "backbone.safetensors").is_file():
        pretrain(data.normal, out_dir=folder, method=args.pretrain_method, backbone="cnn", width=8, epochs=args.pretrain_epochs,
                 seed=0, device=args.device, quiet=True)
    torch.manual_seed(0)
    return build_encoder("cnn", 1, width=8, weights=folder / "backbone.safetensors"), folder


def _queries(data):
    from defectmine.prompt import VisualQuery

    anomalous, normal = data.anomalous, data.normal
    images, masks = anomalous.raw_images().numpy(), anomalous.masks()
    with_mask = [i for i in range(len(anomalous)) if masks[i].any()]
    fg = [VisualQuery(f"defects {q}", [images[i] for i in with_mask[q::N_QUERIES][:2]],
                      [masks[i] for i in with_mask[q::N_QUERIES][:2]]) for q in range(N_QUERIES)]
    rng = np.random.default_rng(0)
    picks = rng.choice(len(normal), size=2 * N_QUERIES, replace=False)
    normals = normal.raw_images().numpy()
    bg = [VisualQuery(f"background {q}", [normals[i] for i in picks[2 * q:2 * q + 2]]) for q in range(N_QUERIES)]
    return fg, bg


def _scores(result, truth: np.ndarray) -> dict:
    from sklearn.metrics import roc_auc_score

    from defectmine.evaluation.pixel import pixel_metrics

    metrics = pixel_metrics(truth, result.probability, threshold=0.5)
    error = (result.mask != truth).ravel()
    row = {"iou": metrics["iou"], "dice": metrics["dice"], "pixel_auroc": metrics["pixel_auroc"],
           "error_share": float(error.mean())}
    for kind in ("entropy", "spread", "mc"):
        values = getattr(result, kind).ravel()
        row[f"{kind}_error_auroc"] = float(roc_auc_score(error, values)) if values.any() and error.any() else None
    return row


def run_prompt(args) -> dict:
    from defectmine.prompt import VisualPromptBackend, prompt_segment

    started = time.time()
    data = _data(None, args.image_size)
    encoder, folder = _encoder(data, args)
    backend = VisualPromptBackend(encoder, data.test.spec, dropout=0.2, match=args.match, device=args.device)
    fg, bg = _queries(data)
    keep = data.test.mask_available
    images, truth = data.test.raw_images()[torch.as_tensor(keep)], data.test.masks()[keep]
    ensemble = _scores(prompt_segment(backend, images, fg, bg, mc_samples=args.mc_samples, seed=0), truth)
    singles = [_scores(prompt_segment(backend, images, [f], [b]), truth) for f, b in zip(fg, bg)]
    return {"ensemble": ensemble, "singles": singles, "n_test_images": int(keep.sum()),
            "n_train_anomalies_used": 2 * N_QUERIES, "encoder": f"cnn width 8, {args.pretrain_method} pretrain {args.pretrain_epochs} "
            f"epochs on {len(data.normal)} training normals at {args.image_size} px", "mc_samples": args.mc_samples,
            "match": args.match, "seconds": time.time() - started, "machine": machine_description()}


def prompt_table(row: dict) -> str:
    singles = row["singles"]
    mean = lambda key: np.mean([s[key] for s in singles])  # noqa: E731
    lines = [f"Visual prompts (match: {row['match']}), encoder: {row['encoder']}; {N_QUERIES} foreground queries (2 training defects "
             f"with their masks each) and {N_QUERIES} background queries (2 training normals each); "
             f"{row['n_test_images']} test images with masks; mask = foreground > background; MC dropout: "
             f"{row['mc_samples']} passes, feature dropout 0.2.", "",
             "| prompts | pixel IoU | pixel Dice | pixel AUROC | wrong pixels | uncertainty AUROC for wrong pixels: entropy | spread | MC dropout |",
             "|---|---|---|---|---|---|---|---|"]
    e = row["ensemble"]
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    lines.append(f"| ensemble ({N_QUERIES}+{N_QUERIES}) | {e['iou']:.3f} | {e['dice']:.3f} | {e['pixel_auroc']:.3f} | "
                 f"{e['error_share']:.3f} | {fmt(e['entropy_error_auroc'])} | {fmt(e['spread_error_auroc'])} | "
                 f"{fmt(e['mc_error_auroc'])} |")
    for i, s in enumerate(singles):
        lines.append(f"| single pair {i} | {s['iou']:.3f} | {s['dice']:.3f} | {s['pixel_auroc']:.3f} | "
                     f"{s['error_share']:.3f} | {fmt(s['entropy_error_auroc'])} | - | - |")
    lines.append(f"| single pairs, mean | {mean('iou'):.3f} | {mean('dice'):.3f} | {mean('pixel_auroc'):.3f} | "
                 f"{mean('error_share'):.3f} | - | - | - |")
    return "\n".join(lines)


# ---------------------------------------------------------------- part 2: synthetic defects for FCDD
def _diffusion(data, args):
    from defectmine.synth import DefectDiffusion, DiffusionConfig
    from defectmine.synth.run import fit_or_load

    folder = WORK / f"diffusion-{args.image_size}px-{args.train_steps}steps"
    if (folder / "synth.json").is_file():
        return DefectDiffusion.load(folder, device=args.device)
    config = DiffusionConfig(image_size=args.image_size, train_steps=args.train_steps, batch_size=16, seed=0)
    started = time.time()
    model = fit_or_load(data.normal, data.anomalous, config, None, device=args.device, quiet=True)
    model.save(folder)
    (folder / "train_seconds.json").write_text(json.dumps({"seconds": time.time() - started}))
    return model


def _extra(method: str, count: int, data, pool, model, seed: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
    from defectmine.data.injection import inject
    from defectmine.synth import synthesize_defects

    normals = data.normal.raw_images().numpy()
    rng = np.random.default_rng(seed)
    if method in ("cutpaste", "poisson"):
        chosen = normals[rng.integers(len(normals), size=count)]
        images, masks, _ = inject(chosen, np.zeros((count, *chosen.shape[-2:]), np.int64), pool, rng, methods=(method,))
        return images, masks
    classes = [c for c, crops in zip(pool.classes[1:], pool.crops[1:]) if crops]
    shares = [count // len(classes) + (i < count % len(classes)) for i in range(len(classes))]
    parts = [synthesize_defects(model, normals, pool, c, n, steps=steps, seed=seed + 100 * i)
             for i, (c, n) in enumerate(zip(classes, shares)) if n]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _training_defects(method: str, count: int, seed: int, args, cache: dict):
    """(the run's data, its K = 10 labelled defects plus `count` extra ones made by `method`)."""
    from defectmine.data import ImageDataset
    from defectmine.data.injection import defect_pool

    if "data" not in cache:
        cache["data"] = _data(10, args.image_size)
    data = cache["data"]
    anomalous = data.anomalous
    if method != "none":
        pool = defect_pool(anomalous.raw_images(), anomalous.class_masks(), anomalous.classes)
        if method == "diffusion" and "model" not in cache:
            cache["model"] = _diffusion(data, args)
        images, masks = _extra(method, count, data, pool, cache.get("model"), seed, args.sample_steps)
        anomalous = ImageDataset.from_tensor(
            np.concatenate([anomalous.raw_images().numpy(), images]), anomalous.spec, labels=[1] * (len(anomalous) + count),
            masks=np.concatenate([anomalous.class_masks(), masks]), classes=anomalous.classes)
    return data, anomalous


def run_unet(method: str, count: int, seed: int, args, cache: dict) -> dict:
    """The segmenter on the training normals + the run's labelled defects (with their masks)."""
    from sklearn.metrics import roc_auc_score

    from defectmine.data import ImageDataset
    from defectmine.evaluation.segmentation import segmentation_metrics
    from defectmine.segment import create_segmenter

    started = time.time()
    data, anomalous = _training_defects(method, count, seed, args, cache)
    normal = data.normal.raw_images().numpy()
    masks = anomalous.class_masks()
    train = ImageDataset.from_tensor(
        np.concatenate([normal, anomalous.raw_images().numpy()]), anomalous.spec,
        labels=[0] * len(normal) + [1] * len(anomalous),
        masks=np.concatenate([np.zeros((len(normal), *masks.shape[1:]), masks.dtype), masks]), classes=anomalous.classes)
    segmenter = create_segmenter("unet", **UNET_PARAMS, epochs=args.epochs, seed=seed, device=args.device, quiet=True)
    segmenter.fit(train, val=data.val)
    test = data.test
    maps = segmenter.predict(test)
    found = segmentation_metrics(maps.class_index(segmenter.threshold_, how="max"), test.class_masks(), test.classes,
                                 available=test.mask_available)
    image_scores = maps.anomaly_map("max").reshape(len(test), -1).max(axis=1)
    return {"model": "unet", "method": method, "count": count if method != "none" else 0, "seed": seed,
            "test_iou_eq8": found["defective_pooled_iou"], "test_mean_iou": found["mean_iou"],
            "auroc": float(roc_auc_score(test.labels, image_scores)), "n_anomalous_train": len(anomalous),
            "seconds": time.time() - started, "load_average": os.getloadavg()[0], "machine": machine_description()}


def run_fcdd(method: str, count: int, seed: int, args, cache: dict) -> dict:
    from sklearn.metrics import roc_auc_score

    from defectmine.models.registry import create

    started = time.time()
    data, anomalous = _training_defects(method, count, seed, args, cache)
    detector = create("fcdd", **FCDD_PARAMS, epochs=args.epochs, seed=seed, device=args.device, quiet=True)
    detector.fit(data.normal, anomalous, val=data.val)
    scores = detector.score(data.test, maps=False).image
    return {"method": method, "count": count if method != "none" else 0, "seed": seed,
            "auroc": float(roc_auc_score(data.test.labels, scores)), "n_anomalous_train": len(anomalous),
            "seconds": time.time() - started, "load_average": os.getloadavg()[0], "machine": machine_description()}


def synth_table(rows: list[dict], args, train_seconds: float | None, sample_class: str) -> str:
    from defectmine.evaluation import aggregate, format_mean_std

    base = [r["auroc"] for r in rows if r["method"] == "none"]
    lines = [f"FCDD (cnn from scratch, width 8, {args.epochs} epochs, {args.image_size} px), K = 10 real labelled "
             f"defects of the fixed split; seeds: {len(base)}. Diffusion: class-conditional UNet2DModel "
             f"(32/64/64 channels), {args.train_steps} training steps of batch 16 at {args.image_size} px "
             f"({'%.0f s' % train_seconds if train_seconds else 'time not recorded'}), trained on the training normals "
             f"and the same 10 defects; samples: DDIM {args.sample_steps} steps, RePaint-style inpainting of the "
             "shapes of the 10 real defects. Cut-paste / Poisson: `defectmine.data.injection.inject` from the same 10.",
             "", "| extra defects | count | seeds | test AUROC | minus K=10 alone (same seeds, mean) |", "|---|---|---|---|---|"]
    alone = {r["seed"]: r["auroc"] for r in rows if r["method"] == "none"}
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["count"]), []).append(r)
    for (method, count), group in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        values = [r["auroc"] for r in group]
        stats = format_mean_std(aggregate([{"v": v} for v in values])["v"], 3)
        # against K = 10 alone on the same seeds, so that a row with fewer seeds compares like with like
        gain = "-" if method == "none" else f"{np.mean(values) - np.mean([alone[r['seed']] for r in group]):+.3f}"
        lines.append(f"| {method} | {count} | {len(values)} | {stats} | {gain} |")
    small = min(args.counts)
    gains = {m: np.mean([r["auroc"] - alone[r["seed"]] for r in rows if r["method"] == m and r["count"] == small])
             for m in args.methods if any(r["method"] == m and r["count"] == small for r in rows)}
    if gains:
        verdict = "helped" if gains.get("diffusion", 0) > 0 else "did not help"
        lines += ["", f"Verdict: {small} diffusion-painted defects {verdict} FCDD at K = 10 here ("
                  + ", ".join(f"{m} {g:+.3f}" for m, g in gains.items()) + " AUROC, mean over seeds). This is the "
                  "small CPU run; the GPU-sized run (`bash benchmarks/on_device.sh synthesis`: 128 px, 8000 steps, "
                  "CUDA) has not been run (this task's device time went to the segmentation and zero-label rows)."]
    lines += ["", f"Generated samples at {args.image_size} px (16 of class `{sample_class}`, shown enlarged, the painted "
              "region outlined in green):", "",
              "![diffusion samples](benchmarks/results/synthesis/samples.png)"]
    return "\n".join(lines)


def unet_table(rows: list[dict], args) -> str:
    """The segmenter's rows: test IoU (eq. 8) and image AUROC, each against K = 10 alone on the same seeds."""
    from defectmine.evaluation import aggregate, format_mean_std

    alone = {r["seed"]: r for r in rows if r["method"] == "none"}
    lines = [f"U-Net segmenter ({json.dumps(UNET_PARAMS)}, {args.unet_epochs} epochs, {args.image_size} px, model selection "
             "and pixel threshold on val), trained on the training normals and the K = 10 real defects' masks, with the "
             "same extra defects as FCDD above (their masks: the painted or pasted region). Test IoU eq. 8 over the "
             "defective test images; image AUROC of the largest class probability.", "",
             "| extra defects | count | seeds | test IoU eq. 8 | minus K=10 alone | image AUROC | minus K=10 alone |",
             "|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["count"]), []).append(r)

    def stats(values):
        return format_mean_std(aggregate([{"v": v} for v in values])["v"], 3)

    for (method, count), group in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        cells = []
        for key in ("test_iou_eq8", "auroc"):
            values = [r[key] for r in group]
            gain = "-" if method == "none" else f"{np.mean(values) - np.mean([alone[r['seed']][key] for r in group]):+.3f}"
            cells += [stats(values), gain]
        lines.append(f"| {method} | {count} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_samples(args) -> str:
    """samples.png: 16 painted defects of the first class with a training defect; returns the class."""
    from defectmine.data.injection import defect_pool
    from defectmine.report.files import save_png
    from defectmine.synth import synthesize_defects
    from defectmine.synth.run import sample_grid

    data = _data(10, args.image_size)
    model = _diffusion(data, args)
    pool = defect_pool(data.anomalous.raw_images(), data.anomalous.class_masks(), data.anomalous.classes)
    name = next(c for c, crops in zip(pool.classes[1:], pool.crops[1:]) if crops)
    images, masks = synthesize_defects(model, data.normal.raw_images().numpy(), pool, name, 16,
                                       steps=args.sample_steps, seed=0)
    save_png(RESULTS / "samples.png", sample_grid(images, masks))
    (RESULTS / "samples.json").write_text(json.dumps({"class": name, "sample_steps": args.sample_steps}))
    return name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["prompt", "synth"], choices=["prompt", "synth"])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--pretrain-method", default="simsiam", choices=["simsiam", "mim"])
    parser.add_argument("--mc-samples", type=int, default=8)
    parser.add_argument("--match", default="nearest", choices=["nearest", "prototype"])
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--sample-steps", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--models", nargs="+", default=["fcdd"], choices=["fcdd", "unet"],
                        help="Which models take the synthetic defects: FCDD and/or the U-Net segmenter.")
    parser.add_argument("--unet-epochs", type=int, default=20)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--counts", nargs="+", type=int, default=[100])
    parser.add_argument("--large-count-seeds", nargs="+", type=int, default=None,
                        help="Seeds for the counts above the smallest (default: --seeds).")
    parser.add_argument("--methods", nargs="+", default=["diffusion", "cutpaste", "poisson"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    tag = f"{args.image_size}px"
    command = ("python benchmarks/synthesis.py " + " ".join(sys.argv[1:])).strip()
    header = [f"Command: `{command}`  ", f"Date: {time.strftime('%Y-%m-%d')}; machine: {machine_description()} "
              "(2 CPU cores shared with other jobs: timings are upper bounds)  ", ""]
    sections, summary = [], {}
    if "prompt" in args.parts:
        row = _cached(RESULTS / f"prompt-{tag}-{args.pretrain_method}-e{args.pretrain_epochs}-{args.match}.json", lambda: run_prompt(args))
        sections += ["### Prompted segmentation (visual prompts, our SSL encoder)", "", prompt_table(row), ""]
        summary.update(prompt_ensemble_iou=row["ensemble"]["iou"],
                       prompt_single_iou=float(np.mean([s["iou"] for s in row["singles"]])),
                       uncertainty_error_auroc=row["ensemble"]["entropy_error_auroc"])
        print(prompt_table(row), flush=True)
    if "synth" in args.parts:
        cache, rows = {}, []
        def seeds_for(count: int) -> list[int]:  # larger counts may run fewer seeds (CPU budget)
            large = args.large_count_seeds is not None and count != min(args.counts)
            return args.large_count_seeds if large else args.seeds

        jobs = [("none", 0, s) for s in args.seeds] + [
            (m, c, s) for c in args.counts for m in args.methods for s in seeds_for(c)]
        unet_rows = []
        for model_name in args.models:
            for method, count, seed in jobs:
                if model_name == "fcdd":
                    path = RESULTS / f"fcdd-{tag}-{args.train_steps}steps-e{args.epochs}-{method}-n{count}-s{seed}.json"
                    rows.append(_cached(path, lambda: run_fcdd(method, count, seed, args, cache)))
                else:
                    path = RESULTS / f"unet-{tag}-{args.train_steps}steps-e{args.unet_epochs}-{method}-n{count}-s{seed}.json"
                    unet_rows.append(_cached(path, lambda: run_unet(method, count, seed, args, cache)))
                last = (rows if model_name == "fcdd" else unet_rows)[-1]
                print(f"{model_name} {method} n={count} seed={seed}: AUROC {last['auroc']:.3f}", flush=True)
        samples = RESULTS / "samples.json"
        sample_class = json.loads(samples.read_text())["class"] if samples.is_file() else write_samples(args)
        seconds_file = WORK / f"diffusion-{tag}-{args.train_steps}steps" / "train_seconds.json"
        seconds = json.loads(seconds_file.read_text())["seconds"] if seconds_file.is_file() else None
        text = synth_table(rows, args, seconds, sample_class)
        sections += ["### Synthetic defects for FCDD at K = 10", "", text, ""]
        if unet_rows:
            sections += ["### Synthetic defects for the segmenter at K = 10", "", unet_table(unet_rows, args), ""]
            unet_base = np.mean([r["test_iou_eq8"] for r in unet_rows if r["method"] == "none"])
            for method in args.methods:
                values = [r["test_iou_eq8"] for r in unet_rows if r["method"] == method and r["count"] == min(args.counts)]
                if values:
                    key = "synthetic" if method == "diffusion" else method
                    summary[f"{key}_gain_unet_k10_iou"] = float(np.mean(values) - unet_base)
        else:
            sections += ["The segmenter with synthetic defects: not run in this command (`--models fcdd unet`)."]
        base = np.mean([r["auroc"] for r in rows if r["method"] == "none"])
        for method, key in (("diffusion", "synthetic_gain_fcdd_k10"), ("cutpaste", "cutpaste_gain_fcdd_k10"),
                            ("poisson", "poisson_gain_fcdd_k10")):
            values = [r["auroc"] for r in rows if r["method"] == method and r["count"] == min(args.counts)]
            if values:
                summary[key] = float(np.mean(values) - base)
        summary.update(synthetic_gain_count=min(args.counts), fcdd_k10_alone_auroc=float(base),
                       synthetic_seeds=len(args.seeds))
        print(text)
    if not args.no_write:
        replace_section(REPO / "BENCHMARKS.md", "synthesis", "Prompted segmentation and synthetic defects (issue 19)",
                        "\n".join(header + sections))
        update_summary(RESULTS, summary)


if __name__ == "__main__":
    main()
