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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from _table import FitFailed, kept_row, machine_description, machines_summary, replace_section, subprocess_env, update_summary  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "segmentation"
SUMMARY_KEYS = ("best_test_iou_eq8", "segdec_mt_k40_auroc", "segdec_mt_k80_auroc", "segdec_mt_k80_pixel_auroc")
# Published equation-8 IoU (ImageNet-pretrained, selected on the reported set): DLI with ResNeSt50d, and
# the average over encoders of DLI and of the baseline losses.
ANCHORS = "DLI paper (ImageNet weights, selected on the reported set): DLI 0.831 (ResNeSt50d), 0.800 average; baseline 0.754"


def run_one(encoder: str, loss: str, injection: bool, seed: int, epochs: int, image_size: int) -> dict:
    """Fit + evaluate one configuration in this process; returns its row."""
    import torch

    from defectmine.pipeline.segment_run import SegmentConfig, fit_segment_run

    config = SegmentConfig(data=f"magnetic_tile_seg_s{seed}", encoder=encoder, loss=loss, epochs=epochs,
                           image_size=image_size, injection=injection, seed=seed, quiet=True)
    out = REPO / "runs" / "bench" / f"seg-{encoder}-{loss}-{'dli' if injection else 'plain'}-s{seed}-e{epochs}"
    result = fit_segment_run(config, out, overwrite=True)
    metrics = result.metrics
    test = metrics["segmentation"]["test"]
    per_class = {name: values["iou"] for name, values in test.get("per_class", {}).items()}
    return {
        "encoder": encoder, "loss": loss, "injection": injection, "seed": seed, "epochs": epochs,
        "image_size": image_size,
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


def _mean_std(values, digits: int = 3) -> str:
    from defectmine.evaluation import aggregate, format_mean_std

    return format_mean_std(aggregate([{"v": v} for v in values])["v"], digits)


def table(rows: list[dict], command: str) -> str:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["encoder"], row["loss"], row["injection"], row["epochs"], row["image_size"]), []).append(row)
    classes = sorted({name for row in rows for name in row["test_iou_per_class"]})
    lines = [
        f"Command: `{command}`  ",
        f"Date: {time.strftime('%Y-%m-%d')}; rows fitted on: {machines_summary([r['machine'] for r in rows])}  ",
        "Settings: U-Net (smp decoder) over the ℓ-encoder, from scratch (no pretrained weights), grayscale, "
        "splits magnetic_tile_seg_s{seed} (train 666 defect-free + 273 defective; val 96 + 41; test 190 + 78); "
        "model selection and the pixel threshold on val; metrics on test. IoU eq. 8 = the DLI paper's pooled "
        "TP / (TP + FP + FN) over the defective test images; 'all' also counts false positives on defect-free "
        "tiles. Mean ± std over seeds.",
        "",
        "| encoder | loss | DLI | px | epochs | seeds | test IoU eq. 8 | IoU, all test images | mean IoU | "
        + " | ".join(f"IoU {c}" for c in classes) + " | image AUROC | fit s | ms/img | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|" + "---|" * len(classes) + "---|---|---|---|",
    ]
    for (encoder, loss, injection, epochs, size), group in sorted(groups.items()):
        cells = [_mean_std([r["test_iou_per_class"].get(c) for r in group]) for c in classes]
        lines.append(
            f"| {encoder} | {loss} | {'on' if injection else 'off'} | {size} | {epochs} | {len(group)} | "
            f"{_mean_std([r['test_iou_eq8'] for r in group])} | {_mean_std([r['test_iou_all'] for r in group])} | "
            f"{_mean_std([r['test_mean_iou'] for r in group])} | " + " | ".join(cells) + " | "
            f"{_mean_std([r['image_auroc'] for r in group])} | {_mean_std([r['fit_seconds'] for r in group], 0)} | "
            f"{_mean_std([r['score_ms_per_image'] for r in group], 2)} | {max(r['peak_rss_mb'] for r in group):.0f} |"
        )
    best = best_iou(rows)
    lines += ["", f"Best mean test IoU (eq. 8): {best:.3f}; target 0.85, "
                  + ("met." if best >= 0.85 else f"missed by {0.85 - best:.3f}.") + f" Anchors: {ANCHORS}."]
    return "\n".join(lines)


def best_iou(rows: list[dict]) -> float:
    """The best mean over seeds of the test equation-8 IoU among the configurations."""
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        key = (row["encoder"], row["loss"], row["injection"], row["epochs"], row["image_size"])
        groups.setdefault(key, []).append(row["test_iou_eq8"])
    return max(sum(v) / len(v) for v in groups.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoders", nargs="+", default=["resnet18"])
    parser.add_argument("--losses", nargs="+", default=["bce_dice"])
    parser.add_argument("--injection", nargs="+", choices=["on", "off"], default=["on"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--one", nargs=6, help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="Do not update BENCHMARKS.md or summary.json.")
    args = parser.parse_args()

    if args.one:
        encoder, loss, injection, seed, epochs, size = args.one
        print(json.dumps(run_one(encoder, loss, injection == "on", int(seed), int(epochs), int(size))))
        return
    rows = []
    for encoder in args.encoders:
        for loss in args.losses:
            for injection in args.injection:
                for seed in args.seeds:
                    name = f"{encoder}-{loss}-{'dli' if injection == 'on' else 'plain'}-s{seed}-e{args.epochs}-{args.image_size}px"
                    started = time.time()
                    try:
                        row, ran = kept_row(RESULTS / "rows" / f"{name}.json", __file__,
                                            ["--one", encoder, loss, injection, str(seed), str(args.epochs),
                                             str(args.image_size)], subprocess_env(1))
                    except FitFailed as error:
                        sys.exit(str(error))
                    rows.append(row)
                    if ran:
                        print(f"{name}: IoU eq. 8 {row['test_iou_eq8']:.3f} ({time.time() - started:.0f} s)", flush=True)
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
