"""Our self-supervised weights vs training from scratch, on the fixed splits of Magnetic Tile and ELPV.

1. Pretrain one backbone on the union of both sets' training images (train + train_anomalous, labels
   unused; val and test images never seen) and record its CPU time.
2. Fit each detector (FCDD, and LIAC or the classifier when registered) with K = 0, 10, 40, 80
   labelled anomalies and 3 seeds, once from scratch and once from our weights - same architecture,
   same settings, only the initial weights differ - and report test AUROC and F1 and their paired
   difference (threshold and model selection on val).

`--choose` instead compares the pretraining methods by measurement: each one pretrains for the same
CPU-time budget, then FCDD with K = 10 is fitted without model selection and its AUROC measured on
val (never test); the method with the best mean becomes DEFAULT_METHOD in pretrain/run.py.

Every (dataset, detector, K, seed, weights) fit runs in its own subprocess and its row is kept in
benchmarks/results/pretrain/, so an interrupted run continues where it stopped; so does pretraining.

    .venv/bin/python benchmarks/pretrain_benchmark.py                 # full protocol (hours on a CPU)
    .venv/bin/python benchmarks/pretrain_benchmark.py --choose        # pick the default method
    .venv/bin/python benchmarks/pretrain_benchmark.py --pretrain-epochs 1 --detector-epochs 1 --seeds 0 \\
        --ks 10 --limit 16 --image-size 32 --no-write                 # smoke test (about a minute)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from dataclasses import fields
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from _table import FitFailed, kept_row, machine_description, machines_summary, replace_section, run_in_parallel, subprocess_env  # noqa: E402
from fcdd_benchmark import DETECTOR_PARAMS, IMAGE_SIZE, _mean_std  # noqa: E402  same settings as the FCDD rows

RESULTS = REPO / "benchmarks" / "results" / "pretrain"
RUNS = REPO / "runs" / "bench" / "pretrain"
DATASETS = ("magnetic_tile", "elpv")
FEW_LABEL_DETECTORS = ("liac", "classifier")  # the first one registered joins FCDD
ARCHITECTURE = {"width": DETECTOR_PARAMS["width"], "stride": 8}
TARGET_KS, TARGET_GAIN = (10, 40), 0.05
CHOOSE_K = 10


# -- data ----------------------------------------------------------------------------------------
def limited(records: list, limit: int | None) -> list:
    """For smoke tests: at most `limit` normal and `limit` anomalous images of every split part
    (train_anomalous is kept whole so that every K exists)."""
    if not limit:
        return records
    kept, counts = [], {}
    for record in records:
        key = (record.split, record.is_anomalous)
        counts[key] = counts.get(key, 0) + 1
        if record.split == "train_anomalous" or counts[key] <= limit:
            kept.append(record)
    return kept


def pretraining_images(settings: dict):
    """The union of the training images of every dataset (at most `limit` per part for smoke tests)."""
    from defectmine.data import ImageDataset, ImageSpec
    from defectmine.pretrain import unlabelled_records

    records = []
    for dataset in settings["datasets"]:
        records += limited(unlabelled_records(dataset), settings["limit"])
    spec = ImageSpec(size=(settings["image_size"],) * 2, channels=1)
    return ImageDataset(records, spec, quiet=True)


# -- pretraining ---------------------------------------------------------------------------------
def pretrain_method(method: str, settings: dict, *, epochs: int | None = None, cpu_budget: float | None = None) -> dict:
    """Pretrain (or continue) `method` on the union; returns pretrain.json and "weights". With `cpu_budget`, the
    number of epochs is what fits in that many CPU seconds, measured on the first epoch."""
    from defectmine.pretrain import method_class, pretrain

    images = pretraining_images(settings)
    backbone = method_class(method).default_backbone
    tag = f"{method}-{backbone}-{settings['image_size']}px" + (f"-limit{settings['limit']}" if settings["limit"] else "")
    out = RUNS / (f"choose-{tag}-budget{cpu_budget:.0f}" if cpu_budget else f"{tag}-{epochs}ep")
    common = dict(out_dir=out, method=method, backbone=backbone, seed=0, source="+".join(settings["datasets"]),
                  quiet=settings["quiet"], **ARCHITECTURE)
    plan = out / "budget.json"  # the epochs the budget allows, fixed once so that reruns continue
    if cpu_budget and plan.is_file():
        epochs = json.loads(plan.read_text())["epochs"]
    elif cpu_budget:
        first = pretrain(images, epochs=1, **common).info
        epochs = max(1, math.floor(cpu_budget / first["cpu_seconds"]))
        plan.write_text(json.dumps({"cpu_budget": cpu_budget, "first_epoch_cpu_seconds": first["cpu_seconds"],
                                    "epochs": epochs}))
    result = pretrain(images, epochs=epochs, **common)
    return {**result.info, "weights": str(result.weights)}


# -- one detector fit (in a subprocess) ----------------------------------------------------------
def run_one(job: dict) -> dict:
    """Fit one detector and measure it. Main mode: model selection and threshold on val, metrics on
    test. Choose mode: no model selection, AUROC on val (test is never looked at)."""
    import resource

    import torch
    from sklearn.metrics import roc_auc_score

    from defectmine.data import fixed_split
    from defectmine.models.registry import create, detector_class
    from defectmine.pipeline import RunConfig, evaluate_scores, prepare_data

    known = {f.name for f in fields(detector_class(job["detector"]).Config)}
    params = {**DETECTOR_PARAMS, **ARCHITECTURE, "backbone": job["backbone"], "epochs": job["detector_epochs"],
              "backbone_weights": job["weights"], "seed": job["seed"], "quiet": True}
    params = {key: value for key, value in params.items() if key in known}
    config = RunConfig(data=job["dataset"], detector=job["detector"], k=job["k"], seed=job["seed"],
                       image_size=job["image_size"], quiet=True)
    data = prepare_data(config, limited(fixed_split(job["dataset"]), job["limit"]))
    detector = create(job["detector"], **params)
    started = time.process_time()
    detector.fit(data.normal, data.anomalous, val=None if job["choose"] else data.val)
    row = {**job, "fit_cpu_seconds": time.process_time() - started, "threads": torch.get_num_threads(),
           "machine": machine_description(),
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    val_scores = detector.score(data.val)
    if job["choose"]:
        return {**row, "val_auroc": float(roc_auc_score(data.val.labels, val_scores.image))}
    metrics = evaluate_scores(config, data.val, val_scores, data.test, detector.score(data.test))
    return {**row, "auroc": metrics["test"]["auroc"], "f1": metrics["test"]["f1"], "auprc": metrics["test"]["auprc"]}


def cached_run(job: dict, n_jobs: int = 1, *, run: bool = True) -> dict | None:
    """The row of `job`, from benchmarks/results/pretrain/ when this exact job ran before (else run it,
    or None with run=False)."""
    # The weights' path is left out: the fingerprint identifies them, and a moved checkout keeps its cache.
    identity = {key: value for key, value in job.items() if key != "weights"}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    name = f"{'choose-' if job['choose'] else ''}{job['dataset']}-{job['detector']}-k{job['k']}-s{job['seed']}-{job['variant']}-{key}.json"
    path = RESULTS / name
    if not run:
        return json.loads(path.read_text()) if path.is_file() else None
    started = time.time()
    try:
        row, ran = kept_row(path, __file__, ["--one", json.dumps(job)], subprocess_env(n_jobs))
    except FitFailed as error:
        sys.exit(str(error))
    if ran:
        measured = f"val AUROC {row['val_auroc']:.3f}" if job["choose"] else f"AUROC {row['auroc']:.3f} F1 {row['f1']:.3f}"
        print(f"{job['dataset']} {job['detector']} K={job['k']} seed={job['seed']} {job['variant']}: {measured} "
              f"({time.time() - started:.0f} s)", flush=True)
    return row


def make_job(settings: dict, *, dataset: str, detector: str, k: int, seed: int, variant: str, info: dict | None,
             backbone: str, choose: bool = False) -> dict:
    """One detector fit; `info` (pretrain.json + "weights") for our weights, None for scratch."""
    return {
        "dataset": dataset, "detector": detector, "k": k, "seed": seed, "variant": variant, "choose": choose,
        "backbone": backbone,
        "weights": info["weights"] if info else None,
        "weights_fingerprint": _weights_fingerprint(info), "detector_epochs": settings["detector_epochs"],
        "image_size": settings["image_size"], "limit": settings["limit"],
    }


def _weights_fingerprint(info: dict | None) -> str | None:
    """What identifies pretrained weights for the row cache: method, data, epochs and final loss."""
    if info is None:
        return None
    return f"{info['method']}-{info['data_fingerprint']}-{info['epochs']}ep-{info['final_loss']:.6f}"


# -- tables --------------------------------------------------------------------------------------
def _header(command: str, settings: dict, backbone: str) -> list[str]:
    return [
        f"Command: `{command}`  ",
        f"Date: {time.strftime('%Y-%m-%d')}; machine: {machine_description()}  ",
        f"Detectors: backbone {backbone}, width {ARCHITECTURE['width']}, stride {ARCHITECTURE['stride']}, "
        f"{settings['image_size']}x{settings['image_size']} grayscale, epochs: {settings['detector_epochs']}, "
        "otherwise the FCDD benchmark's settings" + (f"; smoke test: at most {settings['limit']} images per split part"
                                                      if settings["limit"] else "") + ".",
    ]


def _paired(rows: dict, metric: str) -> tuple[str, str, str, float | None]:
    """mean ± std of scratch, of ours, and of their per-seed difference; and the mean difference."""
    seeds = sorted(set(rows["scratch"]) & set(rows["ours"]))
    scratch = [rows["scratch"][s][metric] for s in seeds]
    ours = [rows["ours"][s][metric] for s in seeds]
    gains = [o - s for o, s in zip(ours, scratch) if o is not None and s is not None]
    if not gains:  # no seed with both variants yet (a partial --report)
        return "-", "-", "n/a", None
    mean_gain = sum(gains) / len(gains)
    spread = _mean_std(gains).partition(" ± ")[2]  # empty for a single seed: no spread to show
    difference = f"{mean_gain:+.3f}" + (f" ± {spread}" if spread else "")
    return _mean_std(scratch), _mean_std(ours), difference, mean_gain


def _machines_line(rows: list[dict]) -> str:
    """Which machine each dataset's rows ran on (rows are kept across runs and machines)."""
    by_dataset: dict[str, set] = {}
    for row in rows:
        by_dataset.setdefault(row["dataset"], set()).add(row.get("machine", "not recorded"))
    return "Rows ran on: " + "; ".join(f"{d}: {machines_summary(m)}" for d, m in sorted(by_dataset.items())) + ".  "


def comparison_table(rows: list[dict], info: dict, command: str, settings: dict) -> str:
    lines = _header(command, settings, f"`{info['backbone']}`") + [_machines_line(rows)] + [
        f"Pretraining: `{info['method']}` ({_recipe_line(info)}), {info['epochs']} epochs on {info['n_images']} "
        f"unlabelled training images of {info['source']} (no val/test images), {info['cpu_seconds']:.0f} CPU s "
        f"({info['wall_seconds']:.0f} s wall, {info['threads']} threads, on {info.get('device', '?')}"
        f"{' ' + info['versions']['cuda'] if info.get('versions', {}).get('cuda') else ''}), "
        f"final loss {info['final_loss']:.4f}.  ",
        f"Test metrics, threshold max-F1 on val, mean ± std over seeds; Δ = ours − scratch per seed. Target: Δ AUROC "
        f"≥ {TARGET_GAIN} at K = {' and '.join(map(str, TARGET_KS))}.",
        "",
        "| dataset | detector | K | paired seeds | AUROC scratch | AUROC ours | Δ AUROC | F1 scratch | F1 ours | Δ F1 | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple, dict] = {}
    for row in rows:
        group = groups.setdefault((row["dataset"], row["detector"], row["k"]), {"scratch": {}, "ours": {}})
        group[row["variant"]][row["seed"]] = row
    verdicts = {}
    for (dataset, detector, k), group in sorted(groups.items()):
        paired = len(set(group["scratch"]) & set(group["ours"]))
        if not paired:
            continue  # nothing to compare yet (scratch rows are shared by every method); listed as not run
        auroc_s, auroc_o, auroc_d, gain = _paired(group, "auroc")
        f1_s, f1_o, f1_d, _ = _paired(group, "f1")
        target = "-" if k not in TARGET_KS or gain is None else ("met" if gain >= TARGET_GAIN else "missed")
        if target != "-":
            verdicts[f"{dataset} {detector} K={k}"] = gain
        lines.append(f"| {dataset} | {detector} | {k} | {paired} | {auroc_s} | {auroc_o} | {auroc_d} | "
                     f"{f1_s} | {f1_o} | {f1_d} | {target} |")
    if verdicts:
        best, worst = max(verdicts, key=verdicts.get), min(verdicts, key=verdicts.get)
        met = sum(gain >= TARGET_GAIN for gain in verdicts.values())
        lines += ["", f"Target met in {met} of {len(verdicts)} cells at K = {' and '.join(map(str, TARGET_KS))}. "
                      f"Largest mean Δ AUROC {verdicts[best]:+.3f} ({best}"
                      + (f", {TARGET_GAIN - verdicts[best]:.3f} short" if verdicts[best] < TARGET_GAIN else "")
                      + f"); smallest {verdicts[worst]:+.3f} ({worst})."]
    return "\n".join(lines)


def missing_line(jobs: list[dict]) -> str:
    """The fits of the requested protocol that have not run yet (a partial --report), grouped by cell."""
    cells: dict[tuple, dict[str, list[int]]] = {}
    for job in jobs:
        cells.setdefault((job["dataset"], job["detector"], job["k"]), {}).setdefault(job["variant"], []).append(job["seed"])
    parts = [f"{dataset} {detector} K={k} ({', '.join(f'{v} seeds {sorted(s)}' for v, s in sorted(by_variant.items()))})"
             for (dataset, detector, k), by_variant in sorted(cells.items())]
    return f"Not run yet ({len(jobs)} fits of the protocol): " + "; ".join(parts) + "."


def _recipe_line(info: dict) -> str:
    return "; ".join(f"{key} {value}" for key, value in info["recipe"].items())


def choose_table(rows: list[dict], infos: dict, command: str, settings: dict, budget: float) -> tuple[str, str]:
    by_method: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        by_method.setdefault(row["variant"], {}).setdefault(row["dataset"], []).append(row["val_auroc"])
    means = {m: sum(sum(v) / len(v) for v in per.values()) / len(per) for m, per in by_method.items()}
    winner = max((m for m in means if m != "scratch"), key=means.get)
    lines = _header(command, settings, "of each method (`cnn` for scratch)") + [
        f"Each method pretrains for about {budget:.0f} CPU s on the union of the training images, then FCDD with "
        f"K = {CHOOSE_K} is fitted without model selection; AUROC on **val** (mean ± std over seeds). "
        f"Best: **{winner}**.",
        "",
        f"| method | backbone | epochs | pretrain CPU s | final loss | {' | '.join(f'{d} val AUROC' for d in settings['datasets'])} | mean |",
        "|---|---|---|---|---|" + "---|" * len(settings["datasets"]) + "---|",
    ]
    for method in sorted(by_method, key=means.get, reverse=True):
        info = infos.get(method)
        pretraining = (f"{info['backbone']} | {info['epochs']} | {info['cpu_seconds']:.0f} | {info['final_loss']:.4f}"
                       if info else "cnn | - | - | -")
        cells = " | ".join(_mean_std(by_method[method].get(d, [])) for d in settings["datasets"])
        lines.append(f"| {method} | {pretraining} | {cells} | {means[method]:.3f} |")
    return "\n".join(lines), winner


# -- main ----------------------------------------------------------------------------------------
def main() -> None:
    from defectmine.models.registry import DETECTORS
    from defectmine.pretrain import DEFAULT_METHOD, METHODS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default=DEFAULT_METHOD, choices=sorted(METHODS), help="Pretraining method.")
    parser.add_argument("--pretrain-epochs", type=int, default=30)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--fit-datasets", nargs="+", choices=DATASETS,
                        help="Fit detectors on these only (default: --datasets, which pretraining always uses).")
    parser.add_argument("--detectors", nargs="+", default=None,
                        help="Default: fcdd and the first registered of " + ", ".join(FEW_LABEL_DETECTORS) + ".")
    parser.add_argument("--ks", nargs="+", type=int, default=[0, 10, 40, 80])
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="Default: 0 1 2 (--choose: 0).")
    parser.add_argument("--detector-epochs", type=int, default=DETECTOR_PARAMS["epochs"])
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    parser.add_argument("--limit", type=int, default=None, help="Smoke tests: at most N images per split part.")
    parser.add_argument("--choose", action="store_true", help="Compare the pretraining methods instead.")
    parser.add_argument("--budget", type=float, default=900.0, help="--choose: pretraining CPU seconds per method.")
    parser.add_argument("--quiet", action="store_true", help="No progress bars.")
    parser.add_argument("--jobs", type=int, default=1, help="Detector fits running side by side.")
    parser.add_argument("--report", action="store_true", help="Only tabulate the rows that ran already.")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="Do not update BENCHMARKS.md.")
    args = parser.parse_args()

    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    settings = {"datasets": args.datasets, "detector_epochs": args.detector_epochs, "image_size": args.image_size,
                "limit": args.limit, "quiet": args.quiet}
    command = ("python benchmarks/pretrain_benchmark.py " + " ".join(sys.argv[1:])).strip()
    if args.choose:
        seeds = args.seeds or [0]
        infos = {method: pretrain_method(method, settings, cpu_budget=args.budget) for method in METHODS}
        rows = [cached_run(make_job(settings, dataset=d, detector="fcdd", k=CHOOSE_K, seed=s, variant=v,
                                    info=infos.get(v), backbone=infos[v]["backbone"] if v in infos else "cnn",
                                    choose=True))
                for v in ["scratch", *METHODS] for d in args.datasets for s in seeds]
        text, winner = choose_table(rows, infos, command, settings, args.budget)
        print(text)
        if winner != DEFAULT_METHOD:
            print(f"\nMeasured best method {winner!r} differs from DEFAULT_METHOD {DEFAULT_METHOD!r} "
                  "(src/defectmine/pretrain/run.py): update it.")
        if not args.no_write:
            replace_section(REPO / "BENCHMARKS.md", "pretrain-choose", "Choosing the pretraining method", text)
        return

    seeds = args.seeds or [0, 1, 2]
    detectors = args.detectors or ["fcdd", *[d for d in FEW_LABEL_DETECTORS if d in DETECTORS][:1]]
    info = pretrain_method(args.method, settings, epochs=args.pretrain_epochs)
    print(f"pretraining: {info['epochs']} epochs, {info['cpu_seconds']:.0f} CPU s, final loss {info['final_loss']:.4f}",
          flush=True)
    jobs = [make_job(settings, dataset=d, detector=det, k=k, seed=s, variant=v, info=info if v == "ours" else None,
                     backbone=info["backbone"])
            for d in args.fit_datasets or args.datasets for det in detectors for k in args.ks for s in seeds
            for v in ("scratch", "ours")]
    found = run_in_parallel(lambda job: cached_run(job, args.jobs, run=not args.report), jobs, args.jobs)
    rows = [row for row in found if row is not None]
    text = comparison_table(rows, info, command, settings)
    missing = [job for job, row in zip(jobs, found) if row is None]
    if missing:
        text += "\n\n" + missing_line(missing)
    print(text)
    if not args.no_write:
        replace_section(REPO / "BENCHMARKS.md", f"pretrain-{args.method}",
                        f"Self-supervised pretraining ({args.method}): our weights vs scratch", text)


if __name__ == "__main__":
    main()
