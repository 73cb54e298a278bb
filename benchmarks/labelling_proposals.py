"""Mask proposals for model-assisted labelling, measured on Magnetic Tile's test masks (issue 16, part 3).

FCDD (K = 80, the FCDD benchmark's settings unless --epochs says otherwise) is fitted once on the fixed
split; its maps become proposals per source (FCDD's own upsampled maps, Grad-CAM of its image score).
`--detector segdec` measures the mask-trained source instead: SegDec (the side-by-side benchmark's
settings), whose own maps are per-pixel defect probabilities learned from the labelled defects' masks.
`--detector unet` measures the segmenter source: `defectmine segment fit` on the same split (its 80
training defects' class masks), whose map is the largest class probability per pixel (UNET_OPTIONS).
For every source:
threshold chosen on val (best mean proposal IoU over val defects), opening/closing radius 1, 8-connected
components, minimum area 4 px. Measured on test: per defect (a connected component of a true mask, at
the model's input size), the IoU of the proposal that overlaps it best; its mean, and the share of
defects whose proposal reaches IoU >= 0.5. Rows go to benchmarks/results/labelling/proposals-<source>.json,
the table to BENCHMARKS.md (section labelling-proposals), `proposal_iou_best` to summary.json.

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/labelling_proposals.py --epochs 25
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from _table import machine_description, replace_section, update_summary  # noqa: E402
from segmentation import CNN_OPTIONS  # noqa: E402  (the small-CNN U-Net every CPU-sized benchmark shares)

RESULTS = REPO / "benchmarks" / "results" / "labelling"
DETECTOR_PARAMS = {"epochs": 25, "width": 8, "lr": 1e-3, "batch_size": 32}  # fcdd_benchmark.py's
# SegDec as benchmarks/side_by_side.py fits it (15 epochs, validated every 3, over the common settings)
SEGDEC_PARAMS = {**DETECTOR_PARAMS, "epochs": 15, "eval_every": 3}
# The segmenter: our small CNN encoder (a CPU budget) under SegDec's decoder; focal loss without
# injection, the loss with the best mean *val* IoU in the segmentation benchmark's 40-epoch rows.
UNET_OPTIONS = {"encoder": "cnn", "loss": "focal", "epochs": 30, "injection": False,
                "segmenter_params": {**CNN_OPTIONS, "eval_every": 3}}
IMAGE_SIZE, K, SEED = 128, 80, 0
SOURCES = ("native", "gradcam")


def run(epochs: int, detector_name: str = "fcdd") -> list[dict]:
    import numpy as np

    from defectmine.labelling import choose_settings, measure, source_maps
    from defectmine.pipeline import RunConfig, prepare_data
    from defectmine.pipeline.steps import create_detector, fit_detector

    if detector_name == "unet":  # a segmenter: the detection split's data, its own fit
        data = prepare_data(RunConfig(data="magnetic_tile", k=K, seed=SEED, image_size=IMAGE_SIZE, quiet=True))
        detector, fit_seconds = _fit_segmenter()
        sources, trained_epochs = ("segmenter",), UNET_OPTIONS["epochs"]
    else:
        params = {**DETECTOR_PARAMS, "epochs": epochs} if detector_name == "fcdd" else dict(SEGDEC_PARAMS)
        config = RunConfig(data="magnetic_tile", detector=detector_name, detector_params=params,
                           k=K, seed=SEED, image_size=IMAGE_SIZE, quiet=True)
        data = prepare_data(config)
        detector = create_detector(config)
        fit_seconds = fit_detector(detector, data)
        sources, trained_epochs = (SOURCES if detector_name == "fcdd" else ("native",)), params["epochs"]
    rows = []
    test_defective = data.test.labels == 1
    for source in sources:
        started = time.perf_counter()
        val_maps = source_maps(detector, data.val, source)
        settings = choose_settings(val_maps, data.val.masks())
        test_maps = source_maps(detector, data.test, source)
        on_test = measure(test_maps[test_defective], data.test.masks()[test_defective], settings)
        on_normal = measure(test_maps[~test_defective], data.test.masks()[~test_defective], settings)
        rows.append({
            "source": {"fcdd": source, "unet": "unet segmenter (largest class probability)"}.get(
                detector_name, f"{detector_name} (mask-trained maps)"),
            "detector": detector_name, "mean_iou": on_test["mean_iou"], "share_iou_50": on_test["share_iou_50"],
            "defects": on_test["defects"], "test_defective_images": int(test_defective.sum()),
            "proposals_per_defective_image": on_test["proposals_per_image"],
            "proposals_per_normal_image": on_normal["proposals_per_image"],
            "threshold": settings.threshold, "threshold_val_quantile": float(np.mean(val_maps <= settings.threshold)),
            "open_px": settings.open_px, "close_px": settings.close_px, "min_area": settings.min_area,
            "epochs": trained_epochs, "image_size": IMAGE_SIZE, "k": K, "seed": SEED, "fit_seconds": fit_seconds,
            "proposal_seconds": time.perf_counter() - started, "machine": machine_description(),
            "load_average": os.getloadavg()[0],
        })
    return rows


def _fit_segmenter():
    """(`segment fit` U-Net on the fixed Magnetic Tile split, its fit seconds); the split's val and test
    are the detectors', and its training defects are the K = 80 they see."""
    from defectmine.pipeline.segment_run import SegmentConfig, fit_segment_run

    config = SegmentConfig(data="magnetic_tile", image_size=IMAGE_SIZE, seed=SEED, quiet=True, **UNET_OPTIONS)
    result = fit_segment_run(config, REPO / "runs" / "bench" / "labelling-proposals-unet", overwrite=True)
    if result.metrics["training"]["n_anomalous"] != K:
        raise SystemExit(f"labelling_proposals.py: the segmenter saw {result.metrics['training']['n_anomalous']} "
                         f"training defects, not K = {K}.")
    return result.segmenter, result.metrics["timing"]["fit_seconds"]


def table(rows: list[dict], command: str) -> str:
    best = max(rows, key=lambda r: r["mean_iou"])
    machines = sorted({r["machine"] for r in rows})
    lines = [
        f"Command: `{command}` (the table holds every kept source row of benchmarks/results/labelling/proposals-*.json; "
        "FCDD's sources come from `python benchmarks/labelling_proposals.py --epochs 25`, SegDec's from "
        "`--detector segdec`, the segmenter's from `--detector unet`)  ",
        f"Date: {time.strftime('%Y-%m-%d')}; machine: {'; '.join(machines)} (shared with other jobs: timings are "
        "upper bounds)  ",
        f"Settings: backbone `cnn` from scratch (the segmenter: U-Net {json.dumps(UNET_OPTIONS)}), K = {K} labelled defects, {IMAGE_SIZE}x{IMAGE_SIZE} grayscale, seed "
        f"{SEED}, fixed Magnetic Tile split; epochs and fit time per row. "
        "Proposals: threshold chosen on val (best mean proposal IoU over val defects, among 40 quantiles of the val "
        "maps), opening and closing radius 1 px, 8-connected components, minimum area 4 px. A defect is a connected "
        "component of a test mask at 128 px; its proposal IoU is the IoU of the proposal that overlaps it best (0 if none).",
        "",
        "| source | model, epochs | fit s | test defects | mean proposal IoU | share IoU ≥ 0.5 | proposals / defective image | "
        "proposals / normal image | threshold (val quantile) | s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['source']} | {r.get('detector', 'fcdd')}, {r['epochs']} | {r['fit_seconds']:.0f} | "
                     f"{r['defects']} ({r['test_defective_images']} images) | {r['mean_iou']:.3f} | "
                     f"{r['share_iou_50']:.3f} | {r['proposals_per_defective_image']:.2f} | "
                     f"{r['proposals_per_normal_image']:.2f} | {r['threshold']:.4g} ({r['threshold_val_quantile']:.3f}) | "
                     f"{r['proposal_seconds']:.0f} |")
    lines += ["", f"Best source: {best['source']} (mean proposal IoU {best['mean_iou']:.3f})."]
    for name, flag in (("Mask-trained detector", "segdec"), ("Segmenter", "unet")):
        if not any(r.get("detector") == flag for r in rows):
            lines[-1] += f" {name} source (`--detector {flag}`): not measured yet."
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=DETECTOR_PARAMS["epochs"])
    parser.add_argument("--detector", choices=["fcdd", "segdec", "unet"], default="fcdd",
                        help="fcdd: its native and Grad-CAM maps; segdec: its mask-trained maps; unet: a "
                             "`segment fit` segmenter's class probabilities.")
    parser.add_argument("--no-write", action="store_true", help="Do not update BENCHMARKS.md / summary.json.")
    parser.add_argument("--report", action="store_true", help="Only re-render the table from the kept rows.")
    args = parser.parse_args()
    new = [] if args.report else run(args.epochs, args.detector)
    RESULTS.mkdir(parents=True, exist_ok=True)
    for row in new:
        name = row["source"] if args.detector == "fcdd" else f"{args.detector}-native"
        (RESULTS / f"proposals-{name}.json").write_text(json.dumps(row, indent=2) + "\n")
    # the table and the summary cover every kept source row (FCDD's and SegDec's come from separate runs)
    rows = [json.loads(path.read_text()) for path in sorted(RESULTS.glob("proposals-*.json"))]
    command = ("python benchmarks/labelling_proposals.py " + " ".join(sys.argv[1:])).strip()
    text = table(rows, command)
    print(text)
    if not args.no_write:
        replace_section(REPO / "BENCHMARKS.md", "labelling-proposals", "Labelling: mask proposals on Magnetic Tile", text)
        update_summary(RESULTS, {"proposal_iou_best": max(r["mean_iou"] for r in rows),
                                 "proposal_iou_best_source": max(rows, key=lambda r: r["mean_iou"])["source"]})


if __name__ == "__main__":
    main()
