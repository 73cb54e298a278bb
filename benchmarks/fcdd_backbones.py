"""FCDD backbone ablation on the fixed splits, as in the deeper-FCDD paper's backbone studies (its
Tables 3, 5, 7, 9, 11: CNN27, VGG16, ResNet101, Inception-v3), here all trained from scratch.

Every backbone gets the same budget: the same epochs, image size, batch size, learning rate, labelled
anomalies (K) and seeds; none has pretrained weights (none can be downloaded here, and a pretrained
backbone against a from-scratch CNN would compare weights, not architectures). timm backbones are cut at
the stage nearest output stride 8, the paper's 28x28 map at 224x224. Each (dataset, backbone, seed) runs
in its own subprocess so that peak RSS is per configuration. Writes raw JSON per run to
benchmarks/results/fcdd_backbones/ (a configuration found there is not fitted again, so an interrupted
run continues) and the table between the fcdd-backbones markers of BENCHMARKS.md.

    .venv/bin/python benchmarks/fcdd_backbones.py                                   # both sets, K=80, seed 0
    .venv/bin/python benchmarks/fcdd_backbones.py --datasets elpv --k 40 --seeds 0 1 2
    .venv/bin/python benchmarks/fcdd_backbones.py --datasets elpv --backbones cnn resnet18 --epochs 1 \\
        --image-size 64 --no-write                                                   # smoke test
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from _table import (  # noqa: E402
    FitFailed, kept_row, machine_description, machines_summary, replace_section, run_in_parallel, subprocess_env,
)
# The FCDD benchmark's settings (its `cnn` row at K = 80 is this table's `cnn` row).
from fcdd_benchmark import DETECTOR_PARAMS, IMAGE_SIZE  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "fcdd_backbones"
BACKBONES = ["cnn", "vgg16", "resnet18", "inception_v3"]


def run_one(dataset: str, backbone: str, k: int, seed: int, epochs: int, image_size: int, device: str) -> dict:
    """Fit + evaluate one configuration in this process; returns its row."""
    import torch

    from defectmine.pipeline import RunConfig, fit_run

    params = {**DETECTOR_PARAMS, "epochs": epochs, "backbone": backbone, "backbone_weights": None, "device": device}
    config = RunConfig(data=dataset, detector="fcdd", detector_params=params, k=k, seed=seed,
                       image_size=image_size, quiet=True)
    out = REPO / "runs" / "bench" / f"backbones-{Path(dataset).name}-{backbone}-k{k}-s{seed}"
    result = fit_run(config, out, overwrite=True)  # a re-run replaces its own scratch run folder
    detector, metrics = result.detector, result.metrics
    network = getattr(detector, "network_", None)
    n_params = sum(p.numel() for p in network.parameters()) if network is not None else None
    map_size = None
    if network is not None:  # the anomaly map's resolution: what the heatmaps are upsampled from
        with torch.inference_mode():
            probe = torch.zeros(1, config.channels, image_size, image_size, device=detector.device)
            map_size = "x".join(str(s) for s in network(probe).shape[-2:])
    test, pixel = metrics["test"], metrics.get("test_pixel") or {}
    return {
        "dataset": dataset, "backbone": backbone, "k": k, "seed": seed, "epochs": epochs, "image_size": image_size,
        "params_m": None if n_params is None else n_params / 1e6, "map": map_size,
        "auroc": test["auroc"], "auprc": test["auprc"], "f1": test["f1"], "precision": test["precision"],
        "recall": test["recall"], "pixel_auroc": pixel.get("pixel_auroc"),
        "fit_seconds": metrics["timing"]["fit_seconds"], "score_ms_per_image": metrics["timing"]["score_ms_per_image"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "best_epoch": metrics["training"]["best_epoch"], "device": str(detector.device),
        "threads": torch.get_num_threads(), "machine": machine_description(),
    }


def table(rows: list[dict], args, command: str, not_run: list[tuple[str, str, int]] = ()) -> str:
    """The section's Markdown: one line per (dataset, backbone) over its seeds, and the fits `not_run` yet."""
    from defectmine.evaluation import aggregate, format_mean_std

    lines = [
        f"Command: `{command}`  ",
        f"Date: {time.strftime('%Y-%m-%d')}; rows fitted on: "
        f"{machines_summary(r.get('machine', 'not recorded') for r in rows) or 'none yet'}  ",
        f"Settings: FCDD, every backbone from scratch (no pretrained weights), cut at output stride 8 (`cnn`: width "
        f"{DETECTOR_PARAMS['width']}); "
        f"{args.image_size}x{args.image_size} grayscale, {args.epochs} epochs, batch {DETECTOR_PARAMS['batch_size']}, "
        f"lr {DETECTOR_PARAMS['lr']}, K = {args.k} labelled anomalies; threshold max-F1 on val; metrics on test; "
        "mean ± std over seeds; ms/img: scoring val+test with maps, batch 64; fits ran "
        f"{max((r.get('jobs', 1) for r in rows), default=1)} at a time at most (fit s and ms/img are measured under "
        "that load).",
        "",
        "| dataset | backbone | params (M) | map | seeds | test AUROC | test AUPRC | test F1 | precision | recall "
        "| pixel AUROC | fit s | ms/img | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["backbone"]), []).append(row)
    keys = ("auroc", "auprc", "f1", "precision", "recall", "pixel_auroc", "fit_seconds", "score_ms_per_image")
    for (dataset, backbone), group in groups.items():
        stats = aggregate([{key: r[key] for key in keys} for r in group])
        cell = {key: format_mean_std(stats[key], 1 if key in ("fit_seconds", "score_ms_per_image") else 3)
                for key in keys}
        params = group[0]["params_m"]
        lines.append(
            f"| {dataset} | {backbone} | {'n/a' if params is None else f'{params:.2f}'} | {group[0]['map']} | "
            f"{len(group)} | {cell['auroc']} | {cell['auprc']} | {cell['f1']} | {cell['precision']} | "
            f"{cell['recall']} | {cell['pixel_auroc']} | {cell['fit_seconds']} | {cell['score_ms_per_image']} | "
            f"{max(r['peak_rss_mb'] for r in group):.0f} |"
        )
    missing = [b for b in BACKBONES if b not in {row["backbone"] for row in rows}]
    if missing:
        lines += ["", f"Not run in this table: {', '.join(missing)} (of the ablation's {', '.join(BACKBONES)})."]
    if not_run:
        seeds: dict[tuple[str, str], list[int]] = {}
        for dataset, backbone, seed in not_run:
            seeds.setdefault((Path(dataset).name, backbone), []).append(seed)
        cells = "; ".join(f"{dataset} {backbone} (seeds {', '.join(map(str, found))})"
                          for (dataset, backbone), found in seeds.items())
        count = f"{len(not_run)} fit{'s' if len(not_run) != 1 else ''}"
        lines += ["", f"Not run yet ({count} of this command): {cells}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["magnetic_tile", "elpv"],
                        help="Built-in sets or data folders (a folder is handy for a smoke test).")
    parser.add_argument("--backbones", nargs="+", default=BACKBONES,
                        help="'cnn' or timm names (resnet34, resnet101, ... work too); all from scratch.")
    parser.add_argument("--k", type=int, default=80, help="Labelled anomalies (the fixed splits reserve 80).")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=DETECTOR_PARAMS["epochs"])
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--jobs", type=int, default=1,
                        help="Fits running side by side (the table's fit times are then measured under that load).")
    parser.add_argument("--one", nargs=3, metavar=("DATASET", "BACKBONE", "SEED"), help=argparse.SUPPRESS)
    parser.add_argument("--report", action="store_true",
                        help="Fit nothing: tabulate the kept rows of these configurations, list those not run yet.")
    parser.add_argument("--no-write", action="store_true", help="Do not update BENCHMARKS.md or benchmarks/results/.")
    args = parser.parse_args()

    if args.one:
        dataset, backbone, seed = args.one[0], args.one[1], int(args.one[2])
        print(json.dumps(run_one(dataset, backbone, args.k, seed, args.epochs, args.image_size, args.device)))
        return

    def fit(configuration: tuple[str, str, int]) -> dict | None:
        dataset, backbone, seed = configuration
        started = time.time()
        path = (RESULTS if not args.no_write else REPO / "runs" / "bench" / "fcdd_backbones-smoke") / \
            f"{Path(dataset).name}-{backbone}-k{args.k}-s{seed}-e{args.epochs}-{args.image_size}px.json"
        if args.report:
            return json.loads(path.read_text()) if path.is_file() else None
        row, ran = kept_row(path, __file__, ["--one", dataset, backbone, str(seed), "--k", str(args.k), "--epochs",
                                             str(args.epochs), "--image-size", str(args.image_size), "--device",
                                             args.device], subprocess_env(args.jobs), {"jobs": args.jobs})
        if ran:
            print(f"{dataset} {backbone} seed={seed}: AUROC {row['auroc']:.3f} F1 {row['f1']:.3f} "
                  f"({time.time() - started:.0f} s)", flush=True)
        return row

    configurations = [(d, b, s) for d in args.datasets for b in args.backbones for s in args.seeds]
    try:
        found = run_in_parallel(fit, configurations, args.jobs)
    except FitFailed as error:
        sys.exit(str(error))
    rows = [row for row in found if row is not None]
    not_run = [configuration for configuration, row in zip(configurations, found) if row is None]
    command = ("python benchmarks/fcdd_backbones.py " + " ".join(sys.argv[1:])).strip()
    text = table(rows, args, command, not_run)
    print(text)
    if not args.no_write:
        replace_section(REPO / "BENCHMARKS.md", "fcdd-backbones", "FCDD backbones, all from scratch", text)


if __name__ == "__main__":
    main()
