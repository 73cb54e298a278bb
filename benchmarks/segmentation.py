"""Segmentation on the Dynamic Label Injection protocol's Magnetic Tile splits (magnetic_tile_seg_s0..s4):
U-Net over the paper's ℓ-encoders, losses by name, with and without Dynamic Label Injection.

Each (encoder, loss, injection, seed) is one `defectmine segment fit` run in its own subprocess (model
selection and both thresholds on val; metrics on the held-out test, which also holds defect-free tiles).
Rows are kept in benchmarks/results/segmentation/rows/, so an interrupted run continues where it stopped
(delete a row to fit it again). The table goes between the segmentation markers of BENCHMARKS.md, and
benchmarks/results/segmentation/summary.json holds `best_test_iou_eq8` (best mean over seeds of the
DLI paper's equation-8 IoU on the defective test images) and the `segdec_*` keys, which stay null until
the mixed-supervision detector exists.

CPU-sized protocol (the paper trains 1000 epochs at full resolution; pass --epochs 1000 on a GPU box):

    .venv/bin/python benchmarks/segmentation.py --encoders resnet18 --losses bce_dice --seeds 0 --epochs 20
    .venv/bin/python benchmarks/segmentation.py --encoders resnet18 mobileone_s1 resnest50d \\
        --losses bce focal balanced weighted_ce bce_dice --injection off on --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from _table import (FitFailed, kept_row, machine_description, machines_summary, replace_section,  # noqa: E402
                    run_in_parallel, subprocess_env, update_summary)

RESULTS = REPO / "benchmarks" / "results" / "segmentation"
SUMMARY_KEYS = ("best_test_iou_eq8", "segdec_mt_k40_auroc", "segdec_mt_k80_auroc", "segdec_mt_k80_pixel_auroc")
# Published equation-8 IoU (ImageNet-pretrained, selected on the reported set): DLI with ResNeSt50d, and
# the average over encoders of DLI and of the baseline losses.
# Our small CNN encoder (the one `defectmine pretrain` makes weights for) under SegDec's light decoder.
CNN_WIDTH = 8
CNN_OPTIONS = {"width": CNN_WIDTH, "decoder_channels": [32, 16, 8]}
PRETRAIN_EPOCHS = 30  # the simsiam benchmark's budget (one run took ~14 min for 40 epochs on the loaded 2-core CPU)
DEFAULT_BLEND = "poisson,cutpaste"
DEFAULT_KEEP_CLEAN = 0.1  # `segment fit`'s default
ANCHORS = "DLI paper (ImageNet weights, selected on the reported set): DLI 0.831 (ResNeSt50d), 0.800 average; baseline 0.754"


@dataclass(frozen=True)
class Job:
    """One (encoder, loss, injection, seed) fit and the knobs of the ablation and data-fraction studies."""

    encoder: str
    loss: str
    injection: bool
    seed: int
    epochs: int
    image_size: int
    blend: str = DEFAULT_BLEND
    keep_clean: float = DEFAULT_KEEP_CLEAN
    fraction: float = 1.0
    eval_every: int = 1
    weights: str = "scratch"

    @property
    def name(self) -> str:
        name = (f"{self.encoder}-{self.loss}-{'dli' if self.injection else 'plain'}-s{self.seed}-e{self.epochs}"
                f"-{self.image_size}px")
        if self.injection and self.blend != DEFAULT_BLEND:
            name += f"-{self.blend.replace(',', '+')}"
        if self.injection and self.keep_clean != DEFAULT_KEEP_CLEAN:
            name += f"-keep{self.keep_clean:g}"
        if self.fraction != 1.0:
            name += f"-frac{self.fraction:g}"
        name += f"-ev{self.eval_every}" if self.eval_every != 1 else ""
        return name + (f"-{self.weights}" if self.weights != "scratch" else "")


def pretrained_weights(seed: int) -> Path:
    """Our self-supervised `cnn` weights for split seed `seed`: `defectmine pretrain` (default method) on
    that split's training images only, labels unused; made once and kept under runs/bench/."""
    from defectmine.data import ImageDataset
    from defectmine.data.builtin import fixed_split
    from defectmine.data.images import ImageSpec
    from defectmine.pretrain.run import pretrain

    out = REPO / "runs" / "bench" / f"seg-pretrain-s{seed}-e{PRETRAIN_EPOCHS}"
    if not (out / "backbone.safetensors").is_file():
        train = [r for r in fixed_split(f"magnetic_tile_seg_s{seed}") if r.split in ("train", "train_anomalous")]
        images = ImageDataset(train, ImageSpec(size=(128, 128), channels=1))
        pretrain(images, out_dir=out, width=CNN_WIDTH, epochs=PRETRAIN_EPOCHS, seed=seed, quiet=True)
    return out / "backbone.safetensors"


def training_records(seed: int, fraction: float) -> list:
    """The split's records with `fraction` of each class's training defects kept (seeded, at least one)."""
    import numpy as np

    from defectmine.data.builtin import fixed_split

    records = fixed_split(f"magnetic_tile_seg_s{seed}")
    if fraction >= 1.0:
        return records
    rng = np.random.default_rng(1000 + seed)
    dropped = set()
    for name in sorted({r.defect_class for r in records if r.split == "train_anomalous"}):
        members = [i for i, r in enumerate(records) if r.split == "train_anomalous" and r.defect_class == name]
        keep = max(1, round(fraction * len(members)))
        dropped.update(rng.permutation(members)[keep:].tolist())
    return [r for i, r in enumerate(records) if i not in dropped]


def run_one(job: Job) -> dict:
    """Fit + evaluate one configuration in this process; returns its row."""
    import torch

    from defectmine.pipeline.segment_run import SegmentConfig, fit_segment_run

    params = {"eval_every": job.eval_every, **(CNN_OPTIONS if job.encoder == "cnn" else {})}
    if job.weights == "ssl":
        params["encoder_weights"] = str(pretrained_weights(job.seed))
    config = SegmentConfig(data=f"magnetic_tile_seg_s{job.seed}", encoder=job.encoder, loss=job.loss,
                           epochs=job.epochs, image_size=job.image_size, injection=job.injection,
                           blend=tuple(job.blend.split(",")), keep_clean=job.keep_clean, seed=job.seed,
                           segmenter_params=params, quiet=True)
    records = training_records(job.seed, job.fraction)
    out = REPO / "runs" / "bench" / f"seg-{job.name}"
    result = fit_segment_run(config, out, records=records, overwrite=True)
    metrics = result.metrics
    test = metrics["segmentation"]["test"]
    per_class = {name: values["iou"] for name, values in test.get("per_class", {}).items()}
    return {
        **asdict(job),
        "n_train_defective": metrics["training"]["n_anomalous"],
        "test_iou_eq8": test.get("defective_pooled_iou"), "test_iou_all": test.get("pooled_iou"),
        "test_mean_iou": test.get("mean_iou"), "test_mean_dice": test.get("mean_dice"),
        "test_iou_per_class": per_class,
        "val_iou_eq8": metrics["segmentation"]["val"].get("defective_pooled_iou"),
        "pixel_threshold": metrics.get("pixel_threshold"),
        "image_auroc": (metrics.get("test") or {}).get("auroc"), "image_f1": (metrics.get("test") or {}).get("f1"),
        "best_epoch": metrics["training"].get("best_epoch"),
        "fit_seconds": metrics["timing"].get("fit_seconds"),
        "score_ms_per_image": metrics["timing"].get("score_ms_per_image"),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "device": str(result.segmenter.device), "threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0], "machine": machine_description(),
    }


def _group_key(row: dict) -> tuple:
    """Rows of one configuration (all but the seed); rows kept before the ablation knobs existed have
    the defaults."""
    return (row["encoder"], row["loss"], row["injection"], row["epochs"], row["image_size"],
            row.get("blend", DEFAULT_BLEND), row.get("keep_clean", DEFAULT_KEEP_CLEAN), row.get("fraction", 1.0),
            row.get("eval_every", 1), row.get("weights", "scratch"))


def _mean_std(values, digits: int = 3) -> str:
    from defectmine.evaluation import aggregate, format_mean_std

    return format_mean_std(aggregate([{"v": v} for v in values])["v"], digits)


def _dli_cell(row: dict) -> str:
    if not row["injection"]:
        return "off"
    blend = row.get("blend", DEFAULT_BLEND)
    return f"{'both' if blend == DEFAULT_BLEND else blend}, keep {row.get('keep_clean', DEFAULT_KEEP_CLEAN):g}"


def table(rows: list[dict], command: str) -> str:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(_group_key(row), []).append(row)
    classes = sorted({name for row in rows for name in row["test_iou_per_class"]})
    lines = [
        f"Command: `{command}`  ",
        f"Date: {time.strftime('%Y-%m-%d')}; rows fitted on: {machines_summary([r['machine'] for r in rows])}  ",
        "Settings: U-Net (smp decoder) over the ℓ-encoder, grayscale; weights: scratch (random init, never "
        f"downloaded) or ssl (our `cnn` pretrained by `defectmine pretrain`, {PRETRAIN_EPOCHS} epochs, on the split's "
        f"training images only); encoder cnn: width {CNN_WIDTH}, decoder channels {CNN_OPTIONS['decoder_channels']}; "
        "splits magnetic_tile_seg_s{seed} (train 666 defect-free + 273 defective; val 96 + 41; test 190 + 78); "
        "model selection (every 'val every' epochs) and the pixel threshold on val; metrics on test. IoU eq. 8 = "
        "the DLI paper's pooled TP / (TP + FP + FN) over the defective test images; 'all' also counts false "
        "positives on defect-free tiles. DLI: how defects are pasted (both = Poisson or cut-paste at random) and "
        "the share of defect-free images left clean. 'best epoch': the selected epoch of each seed (1-based). 'defects' = share of each class's training defects kept "
        "(seeded). Mean ± std over seeds. Fit times of rows fitted side by side on one machine are upper bounds.",
        "",
        "| encoder | weights | loss | DLI | defects | px | epochs | val every | seeds | test IoU eq. 8 | IoU, all test images | "
        "mean IoU | " + " | ".join(f"IoU {c}" for c in classes) + " | image AUROC | best epoch | fit s | ms/img | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(classes) + "---|---|---|---|---|",
    ]
    for key, group in sorted(groups.items(), key=lambda item: tuple(str(v) for v in item[0])):
        first = group[0]
        cells = [_mean_std([r["test_iou_per_class"].get(c) for r in group]) for c in classes]
        lines.append(
            f"| {first['encoder']} | {first.get('weights', 'scratch')} | {first['loss']} | {_dli_cell(first)} | {first.get('fraction', 1.0):.0%} | "
            f"{first['image_size']} | {first['epochs']} | {first.get('eval_every', 1)} | {len(group)} | "
            f"{_mean_std([r['test_iou_eq8'] for r in group])} | {_mean_std([r['test_iou_all'] for r in group])} | "
            f"{_mean_std([r['test_mean_iou'] for r in group])} | " + " | ".join(cells) + " | "
            f"{_mean_std([r['image_auroc'] for r in group])} | "
            f"{', '.join(str(r['best_epoch'] + 1) if r.get('best_epoch') is not None else '-' for r in group)} | "
            f"{_mean_std([r['fit_seconds'] for r in group], 0)} | "
            f"{_mean_std([r['score_ms_per_image'] for r in group], 2)} | {max(r['peak_rss_mb'] for r in group):.0f} |"
        )
    best = best_iou(rows)
    lines += ["", f"Test IoU (eq. 8) of the configuration with the best mean val IoU: {best:.3f}; target 0.85, "
                  + ("met." if best >= 0.85 else f"missed by {0.85 - best:.3f}.") + f" Anchors: {ANCHORS}."]
    return "\n".join(lines)


def best_iou(rows: list[dict]) -> float:
    """The mean test equation-8 IoU of the configuration with the best mean *val* equation-8 IoU, among
    those trained on all the training defects (the data-fraction rows are a study, not contenders)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if row.get("fraction", 1.0) == 1.0:
            groups.setdefault(_group_key(row), []).append(row)

    def mean(group, key):
        values = [r[key] for r in group if r.get(key) is not None]
        return sum(values) / len(values) if values else float("-inf")

    chosen = max(groups.values(), key=lambda group: mean(group, "val_iou_eq8"))
    return mean(chosen, "test_iou_eq8")


def make_jobs(args) -> list[Job]:
    """Every combination asked for; the ablation knobs and fractions apply to injection rows only where
    they mean something (blend and keep_clean need injection)."""
    jobs = []
    for seed in args.seeds:
        for encoder in args.encoders:
            for loss in args.losses:
                for injection in args.injection:
                    on = injection == "on"
                    for blend in (args.blends if on else [DEFAULT_BLEND]):
                        for keep in (args.keep_clean if on else [DEFAULT_KEEP_CLEAN]):
                            for fraction in args.fractions:
                                for weights in (args.weights if encoder == "cnn" else ["scratch"]):
                                    jobs.append(Job(encoder, loss, on, seed, args.epochs, args.image_size, blend,
                                                    keep, fraction, args.eval_every, weights))
    return list(dict.fromkeys(jobs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoders", nargs="+", default=["resnet18"])
    parser.add_argument("--losses", nargs="+", default=["bce_dice"])
    parser.add_argument("--injection", nargs="+", choices=["on", "off"], default=["on"])
    parser.add_argument("--blends", nargs="+", default=[DEFAULT_BLEND],
                        help="DLI paste methods per run, e.g. poisson,cutpaste poisson cutpaste (the ablation).")
    parser.add_argument("--keep-clean", nargs="+", type=float, default=[DEFAULT_KEEP_CLEAN],
                        help="Shares of defect-free images DLI leaves clean.")
    parser.add_argument("--fractions", nargs="+", type=float, default=[1.0],
                        help="Shares of each class's training defects kept (the data-fraction study).")
    parser.add_argument("--weights", nargs="+", choices=["scratch", "ssl"], default=["scratch"],
                        help="Encoder init for --encoders cnn: scratch and/or ssl (our pretrained weights).")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--eval-every", type=int, default=1, help="Validate (model selection) every n epochs.")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--jobs", type=int, default=1, help="Fits side by side (each gets cores / jobs threads).")
    parser.add_argument("--report", action="store_true", help="Only re-render from every kept row.")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="Do not update BENCHMARKS.md or summary.json.")
    args = parser.parse_args()

    if args.one:
        print(json.dumps(run_one(Job(**json.loads(args.one)))))
        return
    if args.report:
        rows = [json.loads(p.read_text()) for p in sorted((RESULTS / "rows").glob("*.json"))]
        if not rows:
            sys.exit(f"segmentation.py: no kept rows in {RESULTS / 'rows'}; run the benchmark first.")
    else:
        def fit(job: Job) -> dict | None:
            started = time.time()
            try:
                row, ran = kept_row(RESULTS / "rows" / f"{job.name}.json", __file__, ["--one", json.dumps(asdict(job))],
                                    subprocess_env(args.jobs))
            except FitFailed as error:
                print(f"{job.name}: {error}", file=sys.stderr, flush=True)
                return None
            if ran:
                print(f"{job.name}: IoU eq. 8 {row['test_iou_eq8']:.3f} ({time.time() - started:.0f} s)", flush=True)
            return row

        jobs = make_jobs(args)
        for seed in sorted({job.seed for job in jobs if job.weights == "ssl"}):
            pretrained_weights(seed)  # once per seed, before the fits that share it start side by side
        rows = [r for r in run_in_parallel(fit, jobs, args.jobs) if r is not None]
        if not rows:
            sys.exit("segmentation.py: no fit finished.")
    command = ("python benchmarks/segmentation.py " + " ".join(sys.argv[1:])).strip()
    text = table(rows, command)
    print(text)
    if args.no_write:
        return
    replace_section(REPO / "BENCHMARKS.md", "segmentation", "Segmentation: U-Net and Dynamic Label Injection (issue 14)", text)
    # The segdec keys come from benchmarks/side_by_side.py (SegDec rows); kept here, null until it ran.
    previous = json.loads((RESULTS / "summary.json").read_text()) if (RESULTS / "summary.json").is_file() else {}
    update_summary(RESULTS, {**{k: previous.get(k) for k in SUMMARY_KEYS}, "best_test_iou_eq8": best_iou(rows)})


if __name__ == "__main__":
    from defectmine.errors import DefectmineError

    try:
        main()
    except DefectmineError as error:
        sys.exit(f"segmentation.py: {error}")
