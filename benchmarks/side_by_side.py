"""Our detectors beside anomalib's reference detectors, on the same fixed splits, machine and script run.

Ours (from scratch, 128 px grayscale, the same budget for every one of them: 25 epochs, width 8):
FCDD, LIAC (ACL as the paper intends, and as equation 11 is printed: the ablation), the shared
classifier with each of the seven imbalance losses, and SegDec (mixed supervision: the labelled
defects' masks teach a U-Net, a decision head gives the image score) - for K = 10, 40, 80 labelled
anomalies, 3 seeds. Rows keep pixel AUROC / AUPRO where the detector's maps were evaluated on masks.
SegDec's rows also give benchmarks/results/segmentation/summary.json its segdec_* keys.
The "best loss-baseline" of the side-by-side table is the loss with the best mean *validation* AUROC.

anomalib's Padim, Patchcore, Stfpm, ReverseDistillation and Cflow (benchmarks/anomalib_peers.py, default
backbones with `pre_trained=False`: no weights can be downloaded here) learn from the normal training
images only, so K does not change them: one fit per dataset and seed, compared with ours at every K.

Every model is scored by the same code: threshold by max F1 on val, metrics on test. Each fit runs in
its own subprocess (clean peak RSS) and its row is kept in benchmarks/results/side_by_side/, so an
interrupted run continues where it stopped. `--jobs N` runs N fits side by side (their fit times then
share the machine; the scoring speeds come from a separate pass with nothing else running: `--speed`).

    benchmarks/.venv/bin/python benchmarks/side_by_side.py --jobs 4      # everything (make bench-venv)
    .venv/bin/python benchmarks/side_by_side.py --only ours              # ours only, no anomalib needed
    benchmarks/.venv/bin/python benchmarks/side_by_side.py --report      # tables from the kept rows
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
from _table import FitFailed, kept_row, machine_description, machines_summary, replace_section, run_in_parallel, score_speed, split_code, subprocess_env, update_summary  # noqa: E402
from fcdd_benchmark import DETECTOR_PARAMS, IMAGE_SIZE, REFERENCE, _mean_std  # noqa: E402
from levers import SSL_EPOCHS, SSL_WEIGHTS, ssl_weights  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "side_by_side"
DATASETS = ("magnetic_tile", "elpv")
KS = (10, 40, 80)
LOSSES = ("ce", "weighted_ce", "focal", "asymmetric", "lal", "el", "lil")
PEERS = ("padim", "patchcore", "stfpm", "reverse_distillation", "cflow")
PUBLISHED_F1 = {("magnetic_tile", 80): 0.936, ("elpv", 80): 0.690}  # LIAC paper, pretrained ResNet34
TARGET_K = 40
# Cflow makes one optimiser step per 64 feature vectors per layer, hundreds of steps per epoch: its
# default 10 epochs took 158 s on an H100 for 192 images, so about 12 min for ELPV's 905. One epoch
# keeps the whole comparison inside one GPU session; the table says so.
PEER_OVERRIDES = {"cflow": {"epochs": 1}}
# SegDec trains a full-resolution decoder: one fit of 25 epochs took over 40 min on the shared 2-core CPU,
# so it runs 15 epochs (validated every 3) - a smaller budget than the others', stated under the table.
SEGDEC_PARAMS: dict = {"epochs": 15, "eval_every": 3}
# Where a GPU is lent: the same detector with four times the budget (what training longer adds).
SEGDEC_LONG_PARAMS: dict = {"epochs": 60, "eval_every": 5}
# The same 15-epoch SegDec with its U-Net encoder initialised from our self-supervised weights (the small
# CNN at the common width, pretrained by levers.py's ssl stage on both sets' unlabelled training images).
# levers.py's marker for those weights is resolved once, in the parent, before the fits start side by side.
SEGDEC_SSL = "SegDec (our SSL encoder)"
# Parts of SegDec's recipe changed one at a time (the 15-epoch settings otherwise): the Dice term pooled
# over the batch instead of one Dice per image, the image score read from the map (its largest pixel
# probability) instead of the decision head, and the encoder at SegDec's own default width.
SEGDEC_ABLATIONS: dict[str, dict] = {
    "SegDec (batch Dice)": {"seg_loss_params": {"per_image_dice": False}},
    "SegDec (map-max score)": {"image_score": "map_max"},
    "SegDec (width 16)": {"width": 16},  # SegDec's own default width (the common one is 8)
}
SEGMENTATION_RESULTS = REPO / "benchmarks" / "results" / "segmentation"
SPEED_TRAIN_LIMIT = 64


def our_models() -> dict[str, tuple[str, dict]]:
    """Display name -> (registry name, parameters) of each of our contenders."""
    models = {"FCDD": ("fcdd", {}), "LIAC": ("liac", {"acl": "intent"}),
              "LIAC (ACL as printed)": ("liac", {"acl": "as_printed"})}
    models.update({f"classifier/{loss}": ("classifier", {"loss": loss}) for loss in LOSSES})
    models["SegDec"] = ("segdec", SEGDEC_PARAMS)
    models["SegDec (no DLI)"] = ("segdec", {**SEGDEC_PARAMS, "injection": False})
    models["SegDec (60 epochs)"] = ("segdec", SEGDEC_LONG_PARAMS)
    models[SEGDEC_SSL] = ("segdec", {**SEGDEC_PARAMS, "backbone_weights": SSL_WEIGHTS})
    models.update({name: ("segdec", {**SEGDEC_PARAMS, **params}) for name, params in SEGDEC_ABLATIONS.items()})
    return models


def resolve_ssl_weights(jobs: list[dict], root: Path) -> None:
    """Give every job of a model initialised from our self-supervised weights the weights file, pretraining
    it first (once, here) where a job of that model still has to run."""
    pending = [job for job in jobs if job["family"] == "ours" and not job.get("speed")
               and our_models()[job["model"]][1].get("backbone_weights") == SSL_WEIGHTS and not _path(job, root).is_file()]
    if pending:
        weights = ssl_weights({"width": DETECTOR_PARAMS["width"]}, IMAGE_SIZE, quiet=False)
        for job in pending:
            job["weights_file"] = weights


# -- one fit (in a subprocess) -------------------------------------------------------------------
def _arrays(dataset):
    """(N, H, W, C) uint8 numpy images of an ImageDataset, the layout anomalib_peers takes."""
    return dataset.raw_images().permute(0, 2, 3, 1).numpy()


def run_ours(job: dict) -> dict:
    import torch

    from defectmine.pipeline import RunConfig, fit_and_evaluate, prepare_data

    registry_name, params = our_models()[job["model"]]
    if params.get("backbone_weights") == SSL_WEIGHTS:
        params = {**params, "backbone_weights": job["weights_file"]}
    config = RunConfig(data=job["dataset"], detector=registry_name, k=job["k"], seed=job["seed"],
                       image_size=IMAGE_SIZE, quiet=True,
                       detector_params={**DETECTOR_PARAMS, **params, **job.get("overrides", {})})
    data = prepare_data(config)
    outcome = fit_and_evaluate(config, data)  # the shared fit -> score -> evaluate path
    detector, metrics, fit_seconds = outcome.detector, outcome.metrics, outcome.fit_seconds

    def score(images, batch):
        detector.config.score_batch_size = batch
        detector.score(images, maps=False)

    speed = score_speed(score, data.test.raw_images()) if job.get("speed") else {}
    return _row(job, metrics, fit_seconds, speed, str(detector.device), torch.get_num_threads())


def run_peer(job: dict) -> dict:
    import numpy as np
    import torch

    import anomalib_peers
    from defectmine.models.base import Scores
    from defectmine.pipeline import RunConfig, evaluate_scores, prepare_data

    config = RunConfig(data=job["dataset"], k=0, seed=job["seed"], image_size=IMAGE_SIZE, quiet=True)
    data = prepare_data(config)
    overrides = dict(job.get("overrides", {}))
    train = _arrays(data.normal)[: overrides.pop("train_limit", None)]
    result = anomalib_peers.run_peer(job["model"], train, {"val": _arrays(data.val), "test": _arrays(data.test)},
                                     seed=job["seed"], **overrides)
    scores = {name: np.asarray(values, dtype=np.float64) for name, values in result["scores"].items()}
    metrics = evaluate_scores(config, data.val, Scores(scores["val"]), data.test, Scores(scores["test"]))
    speed = {key: result[key] for key in ("ms_per_image_b32", "ms_per_image_b1")} if job.get("speed") else {}
    row = _row(job, metrics, result["fit_seconds"], speed, result["params"].get("device", "?"),
               torch.get_num_threads())
    return {**row, "params": result["params"]}


def _row(job: dict, metrics: dict, fit_seconds: float, speed: dict, device: str, threads: int) -> dict:
    test, val = metrics["test"], metrics["val"]
    pixel = metrics.get("test_pixel") or {}
    return {**job, "auroc": test["auroc"], "auprc": test["auprc"], "f1": test["f1"], "accuracy": test["accuracy"],
            "val_auroc": val["auroc"], "pixel_auroc": pixel.get("pixel_auroc"), "pixel_aupro": pixel.get("aupro"),
            "fit_seconds": fit_seconds, **speed,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "device": device, "threads": threads, "date": time.strftime("%Y-%m-%d")}


# -- job bookkeeping -----------------------------------------------------------------------------
def _path(job: dict, root: Path) -> Path:
    kind = "speed" if job.get("speed") else "fit"
    k = "normal-only" if job["family"] == "anomalib" else f"k{job['k']}"
    slug = job["model"].replace("/", "-").replace(" ", "_").replace("(", "").replace(")", "")
    return root / job["dataset"] / f"{kind}-{slug}-{k}-s{job['seed']}.json"


def cached(job: dict, root: Path, n_jobs: int = 1) -> dict:
    started, jobs = time.time(), 1 if job.get("speed") else n_jobs
    try:
        row, ran = kept_row(_path(job, root), __file__, ["--one", json.dumps(job)], subprocess_env(jobs), {"jobs": jobs})
    except FitFailed as error:
        print(f"FAILED {error}", flush=True)
        return {**job, "failed": str(error)[-500:]}
    if ran:
        print(f"{job['dataset']} {job['model']} K={job['k']} seed={job['seed']}{' speed' if job.get('speed') else ''}: "
              f"AUROC {row['auroc']:.3f} F1 {row['f1']:.3f} ({time.time() - started:.0f} s)", flush=True)
    return row


def make_jobs(datasets, ks, seeds, only: str | None, models: list[str] | None) -> list[dict]:
    jobs = []
    for dataset in datasets:
        if only != "anomalib":
            for model in our_models():
                if models and model not in models:
                    continue
                jobs += [{"family": "ours", "dataset": dataset, "model": model, "k": k, "seed": s}
                         for k in ks for s in seeds]
        if only != "ours":
            jobs += [{"family": "anomalib", "dataset": dataset, "model": peer, "k": None, "seed": s,
                      "overrides": PEER_OVERRIDES.get(peer, {})}
                     for peer in PEERS if not models or peer in models for s in seeds[:1]]
    return jobs


def speed_jobs(datasets, only: str | None, models: list[str] | None = None) -> list[dict]:
    """One scoring-speed fit per model family and dataset, run alone (1 epoch where training is by epochs:
    the scoring cost does not depend on how long a model trained)."""
    jobs = []
    for dataset in datasets:
        if only != "anomalib":
            for model in ("FCDD", "LIAC", "classifier/ce"):
                if models and not any(m == model or m.split("/")[0] == model.split("/")[0] for m in models):
                    continue
                jobs.append({"family": "ours", "dataset": dataset, "model": model, "k": TARGET_K, "seed": 0,
                             "speed": True, "overrides": {"epochs": 1}})
        if only != "ours":
            # Scoring cost does not depend on the training-set size, except for Patchcore (its memory bank,
            # here from 64 images: its real scoring is slower, so its speed is a lower bound; its coreset
            # selection over a whole training set takes more than half an hour on a 2-core CPU).
            jobs += [{"family": "anomalib", "dataset": dataset, "model": peer, "k": None, "seed": 0, "speed": True,
                      "overrides": {"epochs": 1, "train_limit": SPEED_TRAIN_LIMIT}}
                     for peer in PEERS if not models or peer in models]
    return jobs


# -- tables --------------------------------------------------------------------------------------
def _mean(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return sum(values) / len(values) if values else None


def best_loss(rows: list[dict], dataset: str) -> str | None:
    """The classifier loss with the best mean validation AUROC over every K and seed (never test)."""
    means = {}
    for loss in LOSSES:
        group = [r for r in rows if r["dataset"] == dataset and r["model"] == f"classifier/{loss}"]
        if group:
            means[f"classifier/{loss}"] = _mean(group, "val_auroc")
    return max(means, key=means.get) if means else None


def _speed_of(speed_rows: list[dict], dataset: str, model: str) -> dict:
    family = "classifier/ce" if model.startswith("classifier/") else "LIAC" if model.startswith("LIAC") else model
    match = [r for r in speed_rows if r["model"] == family]
    # Every image is 128 x 128, so a speed measured on the other dataset stands in when this one has none.
    match.sort(key=lambda r: r["dataset"] != dataset)
    return match[0] if match else {}


def _fmt(value, digits=3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def side_by_side_table(rows: list[dict], speed_rows: list[dict], dataset: str) -> list[str]:
    loss = best_loss(rows, dataset)
    ours = [m for m in ("FCDD", "LIAC", *SEGDEC_MODELS, loss) if m]
    missing = [name for name in LOSSES if not any(r["dataset"] == dataset and r["model"] == f"classifier/{name}"
                                                  for r in rows)]
    lines = [
        (f"Best loss-baseline by mean validation AUROC: `{loss}`." if loss else "")
        + (f" Not run on this dataset yet (so not in the choice): {', '.join(missing)}." if missing else ""),
        "",
        "| model | K | seeds | test AUROC | test AUPRC | test F1 | test accuracy | pixel AUROC | pixel AUPRO | fit s | "
        "ms/img b32 | ms/img b1 | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model in ours:
        for k in KS:
            group = [r for r in rows if r["dataset"] == dataset and r["model"] == model and r["k"] == k]
            if not group:
                continue
            speed = _speed_of(speed_rows, dataset, model)
            lines.append(
                f"| {model} | {k} | {len(group)} | {_mean_std([r['auroc'] for r in group])} | "
                f"{_mean_std([r['auprc'] for r in group])} | {_mean_std([r['f1'] for r in group])} | "
                f"{_mean_std([r['accuracy'] for r in group])} | {_pixel(group, 'pixel_auroc')} | "
                f"{_pixel(group, 'pixel_aupro')} | {_mean_std([r['fit_seconds'] for r in group], 1)} | "
                f"{_fmt(speed.get('ms_per_image_b32'), 2)} | {_fmt(speed.get('ms_per_image_b1'), 2)} | "
                f"{max(r['peak_rss_mb'] for r in group):.0f} |")
    for peer in PEERS:
        group = [r for r in rows if r["dataset"] == dataset and r["model"] == peer]
        if not group:
            continue
        speed = _speed_of(speed_rows, dataset, peer)
        r = group[0]
        lines.append(
            f"| anomalib {peer}{_epochs_note(r)} | any (normal images only) | 1 | {_fmt(r['auroc'])} | {_fmt(r['auprc'])} | "
            f"{_fmt(r['f1'])} | {_fmt(r['accuracy'])} | - | - | {r['fit_seconds']:.1f} | "
            f"{_fmt(speed.get('ms_per_image_b32'), 2)} | {_fmt(speed.get('ms_per_image_b1'), 2)} | {r['peak_rss_mb']:.0f} |")
    if any(r["dataset"] == dataset and r["model"] in SEGDEC_MODELS for r in rows):
        lines += ["", f"SegDec settings: {json.dumps(SEGDEC_PARAMS)} over the common ones (its own defaults otherwise: "
                  "`cnn` encoder, decoder channels (32, 16, 8), DLI with keep_clean 0.5, selection on the mean of val "
                  "image and pixel AUROC); 'SegDec (no DLI)' the same with injection off. Pixel metrics over the test "
                  f"images whose masks are known. 'SegDec (60 epochs)': {json.dumps(SEGDEC_LONG_PARAMS)} instead (GPU rows). "
                  f"'{SEGDEC_SSL}': the first's settings, its encoder initialised from our self-supervised weights "
                  f"(`levers.py`'s ssl stage: the library's default method, {SSL_EPOCHS} epochs, the small CNN at width "
                  f"{DETECTOR_PARAMS['width']}, on both sets' training images, no val or test image). "
                  + "".join(f"'{name}': the first's settings with {json.dumps(params)}. " for name, params in SEGDEC_ABLATIONS.items())
                  + "The Dice term is one Dice per image unless said otherwise. "
                  "The summary's segdec_* keys come from the variant with the best mean validation AUROC among those run at "
                  "both K = 40 and K = 80."]
    trivial = _flag_everything_f1(dataset)
    if trivial is not None:
        lines += ["", f"For scale: flagging every test image as anomalous gives F1 {trivial:.3f} on this split."]
    absent = [peer for peer in PEERS if not any(r["dataset"] == dataset and r["model"] == peer for r in rows)]
    if absent:
        lines += ["", f"anomalib peers not run on this dataset yet: {', '.join(absent)}."]
    lines += ["", *ratio_lines(rows, speed_rows, dataset, ours)]
    return lines


def _pixel(group: list[dict], key: str) -> str:
    """Mean ± std of a pixel metric over the rows that recorded it ("-": rows from before pixel metrics
    were kept, or a detector without maps)."""
    values = [r[key] for r in group if r.get(key) is not None]
    return _mean_std(values) if values else "-"


SEGDEC_MODELS = ("SegDec", "SegDec (no DLI)", "SegDec (60 epochs)", SEGDEC_SSL, *SEGDEC_ABLATIONS)


def segdec_summary(rows: list[dict]) -> dict:
    """The segdec_* keys of the segmentation summary: the mean test AUROC on Magnetic Tile at K = 40 and 80
    and the mean pixel AUROC at K = 80 of the SegDec variant with the best mean *validation* AUROC there
    (None where not run)."""
    mt = [r for r in rows if r["dataset"] == "magnetic_tile" and r["model"] in SEGDEC_MODELS]
    # Only variants with rows at both K = 40 and K = 80 compete (one run at a single K would win on its
    # own K's validation AUROC and leave the other key empty).
    complete = {m for m in {r["model"] for r in mt} if {40, 80} <= {r["k"] for r in mt if r["model"] == m}}
    if not complete:
        return dict.fromkeys(("segdec_mt_k40_auroc", "segdec_mt_k80_auroc", "segdec_mt_k80_pixel_auroc"))
    best = max(complete, key=lambda m: _mean([r for r in mt if r["model"] == m], "val_auroc"))

    def mean_of(k: int, key: str):
        return _mean([r for r in mt if r["model"] == best and r["k"] == k], key)

    return {"segdec_mt_k40_auroc": mean_of(40, "auroc"), "segdec_mt_k80_auroc": mean_of(80, "auroc"),
            "segdec_mt_k80_pixel_auroc": mean_of(80, "pixel_auroc")}


def _epochs_note(row: dict) -> str:
    epochs = row.get("overrides", {}).get("epochs")
    return f" ({epochs} epoch{'s' if epochs != 1 else ''})" if epochs else ""


def _flag_everything_f1(dataset: str) -> float | None:
    """F1 of the trivial detector that calls every test image anomalous: 2p / (1 + p), p the anomalous share."""
    from defectmine.data import fixed_split
    from defectmine.errors import DataError

    try:
        test = [r for r in fixed_split(dataset) if r.split == "test"]
    except DataError:
        return None
    share = sum(r.is_anomalous for r in test) / len(test)
    return 2 * share / (1 + share)


def _machine(row: dict) -> str:
    """The machine a row was fitted on, without the code version."""
    return split_code(row.get("machine", "not recorded"))[0]


def ratio_lines(rows: list[dict], speed_rows: list[dict], dataset: str, ours: list[str]) -> list[str]:
    """Our best detector at K = 40 (by mean validation AUROC) against each peer, and the targets."""
    at_k = {m: [r for r in rows if r["dataset"] == dataset and r["model"] == m and r["k"] == TARGET_K] for m in ours}
    at_k = {m: g for m, g in at_k.items() if g}
    peers = {p: [r for r in rows if r["dataset"] == dataset and r["model"] == p][:1] for p in PEERS}
    peers = {p: g[0] for p, g in peers.items() if g}
    if not at_k or not peers:
        return []
    best = max(at_k, key=lambda m: _mean(at_k[m], "val_auroc"))
    auroc, f1 = _mean(at_k[best], "auroc"), _mean(at_k[best], "f1")
    our_speed = _speed_of(speed_rows, dataset, best)
    lines = [f"Ratios at K = {TARGET_K}: ours = {best} (best mean validation AUROC at K = {TARGET_K}); "
             "quality ratio = ours / peer; speed ratio = peer ms / our ms (above 1: ours is faster).", "",
             "| peer | AUROC ratio | F1 ratio | fit-time ratio | speed ratio b32 | speed ratio b1 |", "|---|---|---|---|---|---|"]
    our_machines = {_machine(r) for r in at_k[best]}
    other_machine = []
    for peer, r in peers.items():
        peer_speed = _speed_of(speed_rows, dataset, peer)
        ratio = lambda a, b: f"{a / b:.2f}" if a and b else "-"  # noqa: E731
        if our_machines == {_machine(r)}:
            fit_ratio = ratio(r["fit_seconds"], _mean(at_k[best], "fit_seconds"))
        else:  # fit times from different machines say nothing about the methods
            fit_ratio = "n/a*"
            other_machine.append(peer)
        lines.append(f"| {peer} | {ratio(auroc, r['auroc'])} | {ratio(f1, r['f1'])} | {fit_ratio} | "
                     f"{ratio(peer_speed.get('ms_per_image_b32'), our_speed.get('ms_per_image_b32'))} | "
                     f"{ratio(peer_speed.get('ms_per_image_b1'), our_speed.get('ms_per_image_b1'))} |")
    if other_machine:
        lines += ["", f"n/a*: {', '.join(other_machine)} was fitted on another machine than {best} (see the header), "
                  "so their fit times do not compare."]
    best_peer_auroc = max(r["auroc"] for r in peers.values())
    best_peer_f1 = max(r["f1"] for r in peers.values())
    fastest = min((s for p in peers if (s := _speed_of(speed_rows, dataset, p).get("ms_per_image_b32"))), default=None)
    ours_ms = our_speed.get("ms_per_image_b32")
    verdict = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    lines += ["",
              f"Target at K = {TARGET_K} (beat every peer on AUROC and F1, score at least as fast as the fastest): "
              f"AUROC {auroc:.3f} vs best peer {best_peer_auroc:.3f} ({auroc - best_peer_auroc:+.3f}, "
              f"{verdict(auroc > best_peer_auroc)}); F1 {f1:.3f} vs {best_peer_f1:.3f} ({f1 - best_peer_f1:+.3f}, "
              f"{verdict(f1 > best_peer_f1)}); "
              + (f"speed {ours_ms:.2f} vs fastest peer {fastest:.2f} ms/img at batch 32 ({verdict(ours_ms <= fastest)})."
                 if ours_ms and fastest else "speed not measured.")]
    k80 = {m: [r for r in rows if r["dataset"] == dataset and r["model"] == m and r["k"] == 80] for m in ours}
    k80 = {m: g for m, g in k80.items() if g}
    if k80 and (dataset, 80) in REFERENCE:
        best80 = max(k80, key=lambda m: _mean(k80[m], "val_auroc"))
        a80, f80 = _mean(k80[best80], "auroc"), _mean(k80[best80], "f1")
        ref_a, ref_f = REFERENCE[(dataset, 80)], PUBLISHED_F1[(dataset, 80)]
        lines.append(f"At K = 80 ({best80}): AUROC {a80:.3f} vs the LIAC paper's pretrained {ref_a} ({a80 - ref_a:+.3f}); "
                     f"F1 {f80:.3f} vs {ref_f} ({f80 - ref_f:+.3f}).")
    return lines


def few_label_table(rows: list[dict], dataset: str) -> list[str]:
    lines = ["| model | " + " | ".join(f"K={k} AUROC | K={k} F1" for k in KS) + " | mean val AUROC |",
             "|---|" + "---|---|" * len(KS) + "---|"]
    for model in our_models():
        group = [r for r in rows if r["dataset"] == dataset and r["model"] == model]
        if not group:
            continue
        cells = []
        for k in KS:
            at = [r for r in group if r["k"] == k]
            cells += [_mean_std([r["auroc"] for r in at]) if at else "-", _mean_std([r["f1"] for r in at]) if at else "-"]
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {_fmt(_mean(group, 'val_auroc'))} |")
    intent = {(r["k"], r["seed"]): r["auroc"] for r in rows if r["dataset"] == dataset and r["model"] == "LIAC"}
    printed = {(r["k"], r["seed"]): r["auroc"] for r in rows
               if r["dataset"] == dataset and r["model"] == "LIAC (ACL as printed)"}
    paired = sorted(set(intent) & set(printed))
    if paired:
        deltas = {k: [intent[(kk, s)] - printed[(kk, s)] for kk, s in paired if kk == k] for k in KS}
        lines += ["", "ACL ablation, paired by K and seed (test AUROC, intent − as printed): " + "; ".join(
            f"K={k}: {_mean_std(d)}" for k, d in deltas.items() if d) + "."]
    return lines


def report(rows: list[dict], speed_rows: list[dict], command: str) -> tuple[str, str]:
    fit_machines = machines_summary(r.get("machine", "?") for r in rows)
    speed_machines = machines_summary(r.get("machine", "?") for r in speed_rows)
    dates = sorted({r.get("date", "?") for r in rows + speed_rows})
    jobs = sorted({r.get("jobs", 1) for r in rows})
    header = [f"Command: `{command}` (tables from the rows kept in benchmarks/results/side_by_side/, each row "
              "written by `python benchmarks/side_by_side.py [--jobs N] [--speed]` on the machine named below)  ",
              f"Date: {', '.join(dates)}; fits (quality, fit time, peak RSS) on: {fit_machines}; "
              f"scoring speed on: {speed_machines or '-'}  ",
              f"Settings: {IMAGE_SIZE}x{IMAGE_SIZE} grayscale, fixed splits; ours from scratch (backbone `cnn`, width "
              f"{DETECTOR_PARAMS['width']}, {DETECTOR_PARAMS['epochs']} epochs, lr {DETECTOR_PARAMS['lr']}, batch "
              f"{DETECTOR_PARAMS['batch_size']}); anomalib 2.7 models with their default backbones and "
              "`pre_trained=False`; threshold max-F1 on val, metrics on test. Fit times: up to "
              f"{max(jobs)} fits ran side by side. Scoring speeds: a separate pass, one model at a time, on "
              f"{' and '.join(sorted({r['dataset'] for r in speed_rows})) or 'no'} test images "
              f"(peers fitted on {SPEED_TRAIN_LIMIT} training images for it: their scoring cost does not depend on that, "
              "except Patchcore's, whose memory bank grows with the training set - its speed is a lower bound).", ""]
    side, few = list(header), list(header)
    for dataset in DATASETS:
        if not any(r["dataset"] == dataset for r in rows):
            continue
        side += [f"### {dataset}", "", *side_by_side_table(rows, speed_rows, dataset), ""]
        few += [f"### {dataset}", "", *few_label_table(rows, dataset), ""]
    return "\n".join(side), "\n".join(few)


def load_rows(root: Path = RESULTS) -> tuple[list[dict], list[dict]]:
    rows = [json.loads(p.read_text()) for p in sorted(root.glob("*/*.json"))]
    return [r for r in rows if not r.get("speed")], [r for r in rows if r.get("speed")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--ks", nargs="+", type=int, default=list(KS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--only", choices=["ours", "anomalib"], help="Run one side only.")
    parser.add_argument("--models", nargs="+", help="Only these models (display names or peer names).")
    parser.add_argument("--jobs", type=int, default=1, help="Fits running side by side.")
    parser.add_argument("--speed", action="store_true", help="Also run the scoring-speed pass (one at a time).")
    parser.add_argument("--speed-datasets", nargs="+", choices=DATASETS,
                        help="Datasets of the speed pass (default: --datasets).")
    parser.add_argument("--epochs", type=int, help="Smoke runs: train every model this many epochs "
                        "(rows go to runs/bench/, BENCHMARKS.md is not touched).")
    parser.add_argument("--report", action="store_true", help="Only write the tables from the kept rows.")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="Do not update BENCHMARKS.md.")
    args = parser.parse_args()

    if args.one:
        job = json.loads(args.one)
        row = run_peer(job) if job["family"] == "anomalib" else run_ours(job)
        print(json.dumps({**row, "machine": machine_description()}))
        return
    # Smoke runs keep their rows away from the real ones.
    root = REPO / "runs" / "bench" / f"side_by_side-epochs{args.epochs}" if args.epochs else RESULTS
    if not args.report:
        jobs = make_jobs(args.datasets, args.ks, args.seeds, args.only, args.models)
        if args.epochs:
            for job in jobs:
                job["overrides"] = {"epochs": args.epochs}
        resolve_ssl_weights(jobs, root)
        jobs.sort(key=lambda job: job["family"] != "anomalib")  # the longest fits start first
        results = run_in_parallel(lambda job: cached(job, root, args.jobs), jobs, args.jobs)
        if args.speed:
            results += [cached(job, root) for job in speed_jobs(args.speed_datasets or args.datasets, args.only, args.models)]
        failed = [r for r in results if r.get("failed")]
        if failed:
            sys.exit(f"{len(failed)} fit(s) failed; see above.")
    rows, speed_rows = load_rows(root)
    command = ("python benchmarks/side_by_side.py " + " ".join(sys.argv[1:])).strip()
    side, few = report(rows, speed_rows, command)
    print(side, few, sep="\n\n")
    if not (args.no_write or args.epochs):
        replace_section(REPO / "BENCHMARKS.md", "side-by-side", "Side by side with anomalib (issue 3)", side)
        replace_section(REPO / "BENCHMARKS.md", "few-label", "Few labelled defects: losses and the ACL ablation", few)
        if any(r["model"] in SEGDEC_MODELS for r in rows):
            update_summary(SEGMENTATION_RESULTS, segdec_summary(rows))


if __name__ == "__main__":
    main()
