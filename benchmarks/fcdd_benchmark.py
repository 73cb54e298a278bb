"""FCDD on Magnetic Tile and ELPV with the fixed splits: K = 0 and K = 80 labelled anomalies, 3 seeds.

Each (dataset, K, seed) runs in its own subprocess so that peak RSS is per configuration. Writes
raw JSON per run to benchmarks/results/fcdd/ and the table between the FCDD markers of BENCHMARKS.md.
A configuration whose JSON is there already is not fitted again (delete the file to re-run it), so an
interrupted run continues where it stopped.

    .venv/bin/python benchmarks/fcdd_benchmark.py                  # full protocol
    .venv/bin/python benchmarks/fcdd_benchmark.py --seeds 0 --datasets elpv --ks 80   # a subset
    .venv/bin/python benchmarks/fcdd_benchmark.py --synthetic-ablation --ks 0 --seeds 0  # K=0: which synthetic defects
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
from _table import FitFailed, kept_row, machine_description, replace_section, score_speed, subprocess_env  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "fcdd"
# The same settings as the demo, so the demo's numbers and these rows describe one model.
DETECTOR_PARAMS = {"epochs": 25, "width": 8, "lr": 1e-3, "batch_size": 32}
IMAGE_SIZE = 128
SYNTHETIC_KINDS = ["none", "confetti", "cutpaste", "mixed"]
REFERENCE = {  # published test AUROC of the LIAC paper's ImageNet-pretrained ResNet34 (K labelled anomalies)
    ("magnetic_tile", 40): 0.901, ("magnetic_tile", 80): 0.963, ("elpv", 40): 0.787, ("elpv", 80): 0.813,
}


def run_one(dataset: str, k: int, seed: int, out: Path, synthetic: str = "auto") -> dict:
    """Fit + evaluate one configuration in this process; returns its row."""
    import torch

    from defectmine.pipeline import RunConfig, fit_run

    params = {**DETECTOR_PARAMS, "synthetic": synthetic}
    config = RunConfig(data=dataset, detector="fcdd", detector_params=params, k=k, seed=seed,
                       image_size=IMAGE_SIZE, quiet=True)
    result = fit_run(config, out, overwrite=True)  # a re-run replaces its own scratch run folder
    detector, metrics = result.detector, result.metrics
    from defectmine.pipeline import prepare_data

    test = prepare_data(config).test
    def score(images, batch):
        detector.config.score_batch_size = batch
        detector.score(images, maps=False)

    timings = score_speed(score, test.raw_images())
    pixel = metrics.get("test_pixel") or {}
    return {
        "dataset": dataset, "k": k, "seed": seed,
        "auroc": metrics["test"]["auroc"], "auprc": metrics["test"]["auprc"], "f1": metrics["test"]["f1"],
        "pixel_auroc": pixel.get("pixel_auroc"), "aupro": pixel.get("aupro"),
        "fit_seconds": metrics["timing"]["fit_seconds"],
        **timings,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "best_epoch": metrics["training"]["best_epoch"], "synthetic": metrics["training"]["synthetic"],
        "device": str(detector.device), "threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0],  # other work on the machine inflates the timings
    }


def _mean_std(values, digits: int = 3) -> str:
    from defectmine.evaluation import aggregate, format_mean_std

    return format_mean_std(aggregate([{"v": v} for v in values])["v"], digits)


def _gap(group: list[dict], reference: float | None) -> str:
    if reference is None:
        return "-"
    mean = sum(r["auroc"] for r in group) / len(group)
    return f"{mean - reference:+.3f}"


def _header(command: str) -> list[str]:
    return [
        f"Command: `{command}`  ",
        f"Date: {time.strftime('%Y-%m-%d')}; machine: {machine_description()}  ",
        f"Settings: FCDD, backbone `cnn` (from scratch, no pretrained weights), {IMAGE_SIZE}x{IMAGE_SIZE} grayscale, "
        f"{DETECTOR_PARAMS['epochs']} epochs, width {DETECTOR_PARAMS['width']}; threshold max-F1 on val; "
        "metrics on test; mean ± std over seeds.",
        "",
    ]


def table(rows: list[dict], command: str) -> str:
    lines = _header(command) + [
        "| dataset | K | seeds | test AUROC | test AUPRC | test F1 | pixel AUROC | fit s | ms/img b32 | ms/img b1 | peak RSS MB | load avg | published AUROC (pretrained ResNet34, LIAC paper) | ours − published |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["k"]), []).append(row)
    for (dataset, k), group in sorted(groups.items()):
        ref = REFERENCE.get((dataset, k))
        lines.append(
            f"| {dataset} | {k} | {len(group)} | {_mean_std([r['auroc'] for r in group])} | "
            f"{_mean_std([r['auprc'] for r in group])} | {_mean_std([r['f1'] for r in group])} | "
            f"{_mean_std([r['pixel_auroc'] for r in group])} | {_mean_std([r['fit_seconds'] for r in group], 1)} | "
            f"{_mean_std([r['ms_per_image_b32'] for r in group], 2)} | {_mean_std([r['ms_per_image_b1'] for r in group], 2)} | "
            f"{max(r['peak_rss_mb'] for r in group):.0f} | {max(r['load_average'] for r in group):.1f} | "
            f"{ref if ref else '-'} | {_gap(group, ref)} |"
        )
    return "\n".join(lines)


def synthetic_table(rows: list[dict], command: str) -> str:
    lines = _header(command) + [
        "Zero labelled anomalies (K = 0): which synthetic defects FCDD trains against ('none' is one-class).",
        "",
        "| dataset | synthetic | seeds | test AUROC | test AUPRC | test F1 | pixel AUROC |",
        "|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["synthetic"]), []).append(row)
    for (dataset, synthetic), group in sorted(groups.items(), key=lambda kv: (kv[0][0], SYNTHETIC_KINDS.index(kv[0][1]))):
        lines.append(
            f"| {dataset} | {synthetic} | {len(group)} | {_mean_std([r['auroc'] for r in group])} | "
            f"{_mean_std([r['auprc'] for r in group])} | {_mean_std([r['f1'] for r in group])} | "
            f"{_mean_std([r['pixel_auroc'] for r in group])} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["magnetic_tile", "elpv"])
    parser.add_argument("--ks", nargs="+", type=int, default=[0, 80])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--synthetic-ablation", action="store_true",
                        help="Compare synthetic-defect kinds (none, confetti, cutpaste, mixed) at the given K.")
    parser.add_argument("--one", nargs=4, metavar=("DATASET", "K", "SEED", "SYNTHETIC"), help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="Do not update BENCHMARKS.md.")
    args = parser.parse_args()

    if args.one:
        dataset, k, seed, synthetic = args.one[0], int(args.one[1]), int(args.one[2]), args.one[3]
        row = run_one(dataset, k, seed, REPO / "runs" / "bench" / f"fcdd-{dataset}-k{k}-s{seed}-{synthetic}", synthetic)
        if synthetic != "auto":  # the ablation's row names the kind it asked for
            row["synthetic"] = synthetic
        print(json.dumps(row))
        return

    rows = []
    kinds = SYNTHETIC_KINDS if args.synthetic_ablation else ["auto"]
    configurations = [(d, k, s, kind) for d in args.datasets for k in args.ks for kind in kinds for s in args.seeds]
    for dataset, k, seed, synthetic in configurations:
        started = time.time()
        try:
            row, ran = kept_row(RESULTS / f"{dataset}-k{k}-s{seed}-{synthetic}.json", __file__,
                                ["--one", dataset, str(k), str(seed), synthetic], subprocess_env(1))
        except FitFailed as error:
            sys.exit(str(error))
        rows.append(row)
        if ran:
            print(f"{dataset} K={k} seed={seed} synthetic={synthetic}: AUROC {row['auroc']:.3f} "
                  f"F1 {row['f1']:.3f} ({time.time() - started:.0f} s)", flush=True)
    command = ("python benchmarks/fcdd_benchmark.py " + " ".join(sys.argv[1:])).strip()
    if args.synthetic_ablation:
        text, key, heading = synthetic_table(rows, command), "fcdd-synthetic", "FCDD without labelled defects: synthetic defects"
    else:
        text, key, heading = table(rows, command), "fcdd", "FCDD on the fixed splits"
    print(text)
    if not args.no_write:
        replace_section(REPO / "BENCHMARKS.md", key, heading, text)


if __name__ == "__main__":
    main()
