"""Zero labels, still localised: vae_gradcam, draem and padim on Magnetic Tile and ELPV (fixed splits), K = 0
(and K = 10 for the first two: draem trains on the labelled defects and their masks, vae_gradcam through its
anomaly hinge, anomaly_weight 10; padim uses normal images only), beside FCDD's K = 0 rows of
benchmarks/results/fcdd/.

Each (dataset, detector, K, seed) fits in its own subprocess (peak RSS per row) and its row is kept in
benchmarks/results/zero_label/ (delete a file to re-run it), so an interrupted run continues. Writes
the "zero-label" section of BENCHMARKS.md and summary.json.

    .venv/bin/python benchmarks/zero_label.py --seeds 0              # every row, seed 0
    .venv/bin/python benchmarks/zero_label.py --seeds 0 1 2          # more seeds as time allows
    .venv/bin/python benchmarks/zero_label.py --report               # re-render from the kept rows
    benchmarks/.venv/bin/python benchmarks/zero_label.py --configs anomalib_draem:0 --budget gpu   # the peer
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from _table import (FitFailed, kept_row, machines_summary, machine_description, replace_section,  # noqa: E402
                    mean_std_cell, score_speed, subprocess_env, update_summary)
from levers import SSL_WEIGHTS  # noqa: E402  a lever's backbone_weights "ours": levers.py's self-supervised weights
OWN_SSL_WEIGHTS = "ours_own"  # the same pretraining on the benchmarked set's training images only
PRETRAIN_SEED = "pretrain_seed"  # a lever option of the benchmark (the pretraining's seed), not of the detector
SMALL_CNN = {"backbone": "cnn", "width": 8}  # the backbone our pretraining builds, for padim's ssl levers
GROUP_BY = "group_by"  # a lever option of the benchmark: one detector per value of this record field (meta)
CLUSTERS = "clusters:"  # GROUP_BY "clusters:2": per k-means cluster of the normal images' features (no field)

RESULTS = REPO / "benchmarks" / "results" / "zero_label"
FCDD_RESULTS = REPO / "benchmarks" / "results" / "fcdd"
IMAGE_SIZE = 128
# Sized for the last half hour on a 2-core CPU shared by ~6 people (load average above 10):
# one VAE epoch on Magnetic Tile took 141 s there, so these are smoke-sized runs, not converged ones.
PARAMS = {
    "vae_gradcam": {"epochs": 2, "batch_size": 32, "lr": 1e-3, "eval_every": 2},
    "draem": {"epochs": 2, "batch_size": 16, "lr": 1e-3, "width": 8, "depth": 4, "eval_every": 2},
    "padim": {},  # trains nothing: its defaults (random resnet18 features) on every budget
}
# `--budget gpu`: the budget for a lent GPU (rows kept apart, with "-gpu" in their file names). draem's
# went from 40 epochs to 80 (checked every 10) when the lever draem_e80 led on val over three seeds
# (BENCHMARKS.md); `gpu40` is the budget before, at which draem's 40-epoch rows and its levers' were fitted.
GPU40_PARAMS = {
    **PARAMS,
    "vae_gradcam": {**PARAMS["vae_gradcam"], "epochs": 40, "eval_every": 5},
    "draem": {**PARAMS["draem"], "epochs": 40, "eval_every": 5},
}
GPU_PARAMS = {**GPU40_PARAMS, "draem": {**PARAMS["draem"], "epochs": 80, "eval_every": 10}}
BUDGETS = {"smoke": PARAMS, "gpu": GPU_PARAMS, "gpu40": GPU40_PARAMS}
# A budget replaced by another: both budgets' rows are compared on shared seeds, and the old one's rows
# stay out of the targets' best-of (as a lever's do).
REPLACED_BUDGETS = {"gpu40": "gpu"}
# With labelled defects (K > 0) the VAE trains on them only through its anomaly hinge (off by default).
LABELLED_PARAMS = {"vae_gradcam": {"anomaly_weight": 10.0}}
CONFIGS = [("vae_gradcam", 0), ("draem", 0), ("draem", 10), ("vae_gradcam", 10), ("padim", 0)]
class Lever(NamedTuple):
    """A measured option of a detector, run by name (`--configs draem_band:0`) and compared with
    `compared_with` on shared seeds."""
    detector: str
    options: dict
    compared_with: str


# Levers are kept beside their detector's rows and out of the best-of summary until adopted as a default
# (on val, then re-run everywhere). draem_src0 is draem as it was before source_ops 3 became its default
# (adopted on val, see BENCHMARKS.md); its rows were fitted then.
LEVERS = {"draem_src0": Lever("draem", {"source_ops": 0}, "draem"),
          "draem_band": Lever("draem", {"defects": ["perlin", "cutpaste", "poisson", "band"], "source_ops": 0},
                              "draem_src0"),
          # texture sources flipped but never turned: grinding marks keep their direction, as in uneven
          "draem_noturn": Lever("draem", {"source_turns": False}, "draem"),
          # three random encoders (seeds s, s + 1, s + 2) whose standardised scores are averaged
          "padim_ens3": Lever("padim", {"ensemble": 3}, "padim"),
          # PaDiM's other choices, one at a time: more kept channels, the two finer stages only, a narrower
          # smoothing of the map
          "padim_n200": Lever("padim", {"n_features": 200}, "padim"),
          "padim_l12": Lever("padim", {"layers": [1, 2]}, "padim"),
          "padim_sigma2": Lever("padim", {"sigma": 2.0}, "padim"),
          # the features of our own self-supervised small CNN (levers.py's ssl weights: the library's default
          # method, 30 epochs on both sets' training images, no val or test image) instead of random resnet18's
          "padim_ssl": Lever("padim", {**SMALL_CNN, "backbone_weights": SSL_WEIGHTS}, "padim"),
          # the same with other pretraining seeds: whether padim_ssl's lead on Magnetic Tile is one draw
          **{f"padim_ssl_p{seed}": Lever("padim", {**SMALL_CNN, "backbone_weights": SSL_WEIGHTS,
                                                   PRETRAIN_SEED: seed}, "padim") for seed in (1, 2)},
          # padim's ensemble over those three pretrainings (one encoder per weights file)
          "padim_ssl_ens3": Lever("padim", {**SMALL_CNN, "backbone_weights": SSL_WEIGHTS, PRETRAIN_SEED: [0, 1, 2]},
                                  "padim"),
          # the same pretraining on the training images of the benchmarked set only
          "padim_ssl_own": Lever("padim", {**SMALL_CNN, "backbone_weights": OWN_SSL_WEIGHTS}, "padim"),
          # the same with other pretraining seeds: how much of padim_ssl_own's lead is one SimSiam run's draw
          **{f"padim_ssl_own_p{seed}": Lever("padim", {**SMALL_CNN, "backbone_weights": OWN_SSL_WEIGHTS,
                                                       PRETRAIN_SEED: seed}, "padim") for seed in (1, 2)},
          # one padim per ELPV cell type (mono, poly: the dataset's metadata, no defect label), each image
          # scored by its own type's: how much mixing two kinds of normal cell in one Gaussian costs
          "padim_by_type": Lever("padim", {GROUP_BY: "cell_type"}, "padim"),
          # ELPV's own pretrainings (seeds 0, 1, 2) as one ensemble, alone and one per cell type
          "padim_ssl_own_ens3": Lever("padim", {**SMALL_CNN, "backbone_weights": OWN_SSL_WEIGHTS,
                                                PRETRAIN_SEED: [0, 1, 2]}, "padim"),
          "padim_by_type_ssl_own_ens3": Lever("padim", {**SMALL_CNN, "backbone_weights": OWN_SSL_WEIGHTS,
                                                        PRETRAIN_SEED: [0, 1, 2], GROUP_BY: "cell_type"},
                                              "padim_by_type"),
          # the same without the cell type: two k-means clusters of the normal cells' features (averaged over
          # positions, the three members' side by side), each image scored by its cluster's padim
          "padim_clusters2_ssl_own_ens3": Lever("padim", {**SMALL_CNN, "backbone_weights": OWN_SSL_WEIGHTS,
                                                          PRETRAIN_SEED: [0, 1, 2], GROUP_BY: CLUSTERS + "2"},
                                                "padim_ssl_own_ens3"),
          # the same with another set of three pretrainings (seeds 3, 4, 5): whether the gain is that set's draw
          "padim_clusters2_ssl_own_ens3_p345": Lever("padim", {**SMALL_CNN, "backbone_weights": OWN_SSL_WEIGHTS,
                                                               PRETRAIN_SEED: [3, 4, 5], GROUP_BY: CLUSTERS + "2"},
                                                     "padim"),
          # the same small CNN pretrained inside the fit, on the normal training images only (30 epochs)
          "padim_pre30": Lever("padim", {**SMALL_CNN, "pretrain_epochs": 30}, "padim")}
# anomalib's Draem at our draem's epochs: `--configs anomalib_draem:0`, run with the benchmark venv's python
# (make bench-venv), where anomalib is installed; on a GPU box: `bash benchmarks/on_device.sh draem_peer`.
PEER = "anomalib_draem"
MT_CLASSES = ("blowhole", "break", "crack", "fray", "uneven")
# draem's image score read from the same fit's maps in other ways (a scoring lever needs no refit): the
# maximum after a mean filter of these sides (11 is draem's score_pool), and the mean of the top share of
# pixels (large, faint regions such as uneven raise a mean over many pixels more than a local peak), each
# of the map as it is, and "zpool11": the 11x11 filter's maximum of the map standardised pixel by pixel by
# the training normals' maps (draem's `standardise`, which led on val and is its default).
SCORE_POOLS = (1, 11, 21, 41)
SCORE_TOP_SHARES = (0.01, 0.05)
# draem's own map is the standardised one (standardise "both", its default, adopted on val); rows that
# record it count it, not the map as it is ("defect map"), in the targets' best-of. Rows fitted at
# standardise "score" record it too: "score" and "both" give the same image scores and standardised map.
OWN_MAP_OVER = {"standardised map": "defect map"}
TARGETS = {"mt_image": 0.90, "mt_pixel": 0.90, "elpv_image": 0.75}


def _pixel(test, maps, threshold, keep=None):
    from defectmine.evaluation.pixel import pixel_metrics_where

    masks, available = test.masks(), test.mask_available
    if keep is not None:
        masks, maps, available = masks[keep], maps[keep], available[keep]
    found = pixel_metrics_where(masks, maps, available, threshold)
    return None if found is None else {k: found.get(k) for k in ("pixel_auroc", "aupro", "dice", "iou")}


def _map_metrics(data, val_maps, test_maps) -> dict:
    """Pixel metrics of a detector's maps of val and test: threshold max-Dice on val, per class on MT;
    "val", the same metrics on val (what a choice between maps may be made on)."""
    import numpy as np

    from defectmine.evaluation.pixel import pixel_threshold_max_dice

    val, test = data.val, data.test
    threshold = pixel_threshold_max_dice(val.masks(), val_maps, available=val.mask_available)
    out = {"all": _pixel(test, test_maps, threshold), "val": _pixel(val, val_maps, threshold), "per_class": {}}
    classes = np.array([r.defect_class or "" for r in test.records])
    for name in MT_CLASSES:
        keep = (classes == name) | ~test.labels.astype(bool)
        if (classes == name).any():
            out["per_class"][name] = _pixel(test, test_maps, threshold, keep)
    return out


def image_score_variants(val_maps, test_maps, val_labels, test_labels, test_classes, standardised=None) -> dict:
    """AUROC on val and test of draem-style image scores read from defect maps (N, H, W) in other ways
    (SCORE_POOLS, SCORE_TOP_SHARES, and given `standardised` = (val, test) maps standardised by the
    training normals' maps, "zpool11"); per Magnetic Tile class on test, that class's defective images
    against every normal test image."""
    import numpy as np
    import torch
    from sklearn.metrics import roc_auc_score

    from defectmine.models.draem import image_score

    def scores(split, variant):
        maps = (standardised if variant == "zpool11" else (val_maps, test_maps))[split]
        maps = torch.from_numpy(np.asarray(maps, dtype=np.float32))
        if variant.startswith(("pool", "zpool")):
            return image_score(maps, int(variant.split("pool")[1])).numpy()
        flat = maps.flatten(1)
        top = max(1, round(flat.shape[1] * float(variant[3:])))
        return flat.topk(top, dim=1).values.mean(dim=1).numpy()

    out = {}
    test_labels = np.asarray(test_labels).astype(bool)
    classes = np.asarray(test_classes)
    variants = [f"pool{p}" for p in SCORE_POOLS] + [f"top{s}" for s in SCORE_TOP_SHARES]
    for variant in variants + (["zpool11"] if standardised is not None else []):
        val_scores, test_scores = scores(0, variant), scores(1, variant)
        row = {"val_auroc": float(roc_auc_score(val_labels, val_scores)),
               "test_auroc": float(roc_auc_score(test_labels, test_scores)), "per_class": {}}
        for name in MT_CLASSES:
            keep = (classes == name) | ~test_labels
            if (classes == name).any():
                row["per_class"][name] = float(roc_auc_score(test_labels[keep], test_scores[keep]))
        out[variant] = row
    return out


def _figure(detector, test, path: Path) -> None:
    """Original / ground truth / attention / residual of the best and the worst defective test image
    (highest and lowest image score)."""
    import matplotlib.pyplot as plt
    import numpy as np

    labels = test.labels.astype(bool)
    scores = detector.score(test, maps=False).image
    defective = np.flatnonzero(labels & test.mask_available)
    picks = [("best", defective[np.argmax(scores[defective])]), ("worst", defective[np.argmin(scores[defective])])]
    idx = [i for _, i in picks]
    subset = test.subset(idx)
    detector.config.anomaly_map = "attention"
    attention = detector.score(subset).maps
    detector.config.anomaly_map = "residual"
    residual = detector.score(subset).maps
    fig, axes = plt.subplots(2, 4, figsize=(10, 5.4))
    for row, ((name, i), att, res) in enumerate(zip(picks, attention, residual)):
        panels = [(test.raw_images()[i, 0].numpy(), "original", "gray"), (test.masks()[i], "ground truth", "gray"),
                  (att, "attention", "inferno"), (res, "residual", "inferno")]
        for col, (image, title, cmap) in enumerate(panels):
            axes[row, col].imshow(image, cmap=cmap)
            axes[row, col].set_title(f"{name} ({test.records[i].defect_class}): {title}" if col == 0 else title, fontsize=8)
            axes[row, col].axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def run_peer_draem(dataset: str, seed: int, budget: str) -> dict:
    """anomalib's Draem at our draem's epochs of this budget, K = 0 (normal images only): image metrics."""
    import anomalib_peers
    import numpy as np

    from defectmine.pipeline import RunConfig, prepare_data

    epochs = BUDGETS[budget]["draem"]["epochs"]
    config = RunConfig(data=dataset, k=0, seed=seed, image_size=IMAGE_SIZE, quiet=True)
    data = prepare_data(config)

    def arrays(images):
        return images.raw_images().permute(0, 2, 3, 1).numpy()

    result = anomalib_peers.run_peer("draem", arrays(data.normal), {"val": arrays(data.val), "test": arrays(data.test)},
                                     seed=seed, epochs=epochs)
    val_scores, test_scores = (np.asarray(result["scores"][name]) for name in ("val", "test"))
    return _image_row(config, data, val_scores, test_scores, detector=PEER, params={"epochs": epochs}, budget=budget,
                      fit_seconds=result["fit_seconds"], ms_per_image_b32=result.get("ms_per_image_b32"),
                      peer_params=result["params"])


def _image_row(config, data, val_scores, test_scores, **fields) -> dict:
    """A row of image metrics from scores of val and test computed outside a run (a peer's, a grouped
    lever's): max-F1 threshold on val as a run's, F1 at the paper's mean + 1 std of the val normals."""
    import numpy as np
    import torch

    from defectmine.core.results import Scores
    from defectmine.evaluation import image_metrics
    from defectmine.pipeline import evaluate_scores

    val_scores, test_scores = np.asarray(val_scores), np.asarray(test_scores)
    metrics = evaluate_scores(config, data.val, Scores(val_scores), data.test, Scores(test_scores))
    val_normal = val_scores[data.val.labels == 0]
    return {
        "dataset": config.data, "k": config.k, "seed": config.seed,
        "auroc": metrics["test"]["auroc"], "auprc": metrics["test"]["auprc"], "f1": metrics["test"]["f1"],
        "val_auroc": metrics["val"].get("auroc"),
        "f1_mean_std": image_metrics(data.test.labels, test_scores, float(val_normal.mean() + val_normal.std()))["f1"],
        "maps": {}, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "best_epoch": None,
        "threads": torch.get_num_threads(), "load_average": os.getloadavg()[0], "machine": machine_description(),
        **fields,
    }


def run_grouped(dataset: str, config_name: str, seed: int, budget: str) -> dict:
    """A lever with GROUP_BY: one detector per value of that record field among the normal training images,
    each val and test image scored by its own value's detector (image metrics only)."""
    import time

    import numpy as np

    from defectmine.pipeline import RunConfig, prepare_data
    from defectmine.pipeline.steps import create_detector

    lever = LEVERS[config_name]
    field = lever.options[GROUP_BY]
    params = {**BUDGETS[budget][lever.detector], **lever.options}
    fit_params, pretraining = _with_weights(dataset, params)
    config = RunConfig(data=dataset, detector=lever.detector, detector_params=fit_params, k=0, seed=seed,
                       image_size=IMAGE_SIZE, quiet=True)
    data = prepare_data(config)

    def groups(images) -> np.ndarray:
        values = [r.meta.get(field) for r in images.records]
        if None in values:
            raise SystemExit(f"{config_name}: {dataset}'s records have no {field!r}; run this lever on ELPV only.")
        return np.array(values)

    started = time.perf_counter()
    if field.startswith(CLUSTERS):  # label-free: k-means on the features of one detector fitted on them all
        groups = _feature_clusters(create_detector(config).fit(data.normal), data.normal,
                                   int(field.removeprefix(CLUSTERS)), seed)
    train_groups = groups(data.normal)
    detectors = {value: create_detector(config).fit(data.normal.subset(np.flatnonzero(train_groups == value)))
                 for value in sorted(set(train_groups))}
    fit_seconds = time.perf_counter() - started

    def scores(images) -> np.ndarray:
        own, out = groups(images), np.zeros(len(images))
        unseen = sorted(set(own) - set(detectors))
        if unseen:  # its images would have no detector
            raise SystemExit(f"{config_name}: {field} {unseen} has no normal training image.")
        for value, detector in detectors.items():  # each detector scores its own group's images only
            rows = np.flatnonzero(own == value)
            if rows.size:
                out[rows] = detector.score(images.subset(rows), maps=False).image
        return out

    return _image_row(config, data, scores(data.val), scores(data.test), detector=config_name, params=params,
                      budget=budget, fit_seconds=fit_seconds, ms_per_image_b32=None,
                      groups={str(value): int((train_groups == value).sum()) for value in detectors},
                      **({"pretraining": pretraining} if pretraining else {}))


def _feature_clusters(detector, normal, n_clusters: int, seed: int):
    """A function from images to their cluster ("cluster0", ...): k-means (standardised features, fitted on
    `normal`) on each image's features averaged over positions, every ensemble member's side by side."""
    import numpy as np
    import torch
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import StandardScaler

    def pooled(images) -> np.ndarray:
        parts = []
        with torch.no_grad():
            pixels = images.raw_images()
            for member in detector.members_ or [detector]:
                batches = member._normalised_batches(pixels)
                parts.append(torch.cat([member.network_.features(b).mean(1).cpu() for b in batches]).numpy())
        return np.concatenate(parts, axis=1)

    reference = pooled(normal)
    scaler = StandardScaler().fit(reference)
    kmeans = KMeans(n_clusters, n_init=10, random_state=seed).fit(scaler.transform(reference))
    return lambda images: np.array([f"cluster{c}" for c in kmeans.predict(scaler.transform(pooled(images)))])


def _with_weights(dataset: str, params: dict) -> tuple[dict, dict | list[dict] | None]:
    """(the detector's options, the pretraining behind its weights): a lever's backbone_weights "ours" or
    "ours_own" becomes our self-supervised weights file (pretrained once into runs/bench/; with a list of
    PRETRAIN_SEED, one file per seed, padim's ensemble over them); benchmark-only options are dropped."""
    fit_params = {k: v for k, v in params.items() if k not in (PRETRAIN_SEED, GROUP_BY)}
    if params.get("backbone_weights") not in (SSL_WEIGHTS, OWN_SSL_WEIGHTS):
        return fit_params, None
    from levers import DATASETS, pretraining_info, ssl_weights

    sets = DATASETS if params["backbone_weights"] == SSL_WEIGHTS else (dataset,)
    seeds = params.get(PRETRAIN_SEED, 0)
    weights = [ssl_weights({"width": params["width"]}, IMAGE_SIZE, datasets=sets, seed=s)
               for s in (seeds if isinstance(seeds, list) else [seeds])]
    fit_params["backbone_weights"] = weights if isinstance(seeds, list) else weights[0]
    pretraining = [pretraining_info(w) for w in weights]
    return fit_params, pretraining if isinstance(seeds, list) else pretraining[0]


def run_one(dataset: str, config_name: str, k: int, seed: int, budget: str = "smoke") -> dict:
    import torch

    if config_name == PEER:
        return run_peer_draem(dataset, seed, budget)
    lever = LEVERS.get(config_name, Lever(config_name, {}, config_name))
    if GROUP_BY in lever.options:
        return run_grouped(dataset, config_name, seed, budget)
    detector_name = lever.detector

    from defectmine.evaluation import image_metrics
    from defectmine.evaluation.thresholds import mean_std_threshold
    from defectmine.pipeline import RunConfig, fit_run, prepare_data

    params = {**BUDGETS[budget][detector_name], **lever.options, **(LABELLED_PARAMS.get(detector_name, {}) if k else {})}
    fit_params, pretraining = _with_weights(dataset, params)
    config = RunConfig(data=dataset, detector=detector_name, detector_params=fit_params, k=k,
                       seed=seed, image_size=IMAGE_SIZE, quiet=True)
    result = fit_run(config, REPO / "runs" / "bench" / f"zero-{dataset}-{config_name}-k{k}-s{seed}-{budget}",
                     overwrite=True)
    detector, metrics = result.detector, result.metrics
    data = prepare_data(config)
    val_image = detector.score(data.val, maps=False).image
    test_image = detector.score(data.test, maps=False).image
    # the paper's rule: mean + 1 std of the validation normals' errors (max-F1 is the run's own rule)
    mean_std = mean_std_threshold(data.val.labels, val_image, k=1.0)
    f1_mean_std = image_metrics(data.test.labels, test_image, mean_std.value)["f1"]
    maps = {}
    if data.test.has_masks:
        if detector_name == "vae_gradcam":
            for kind in ("attention", "residual"):
                detector.config.anomaly_map = kind
                maps[kind] = _map_metrics(data, detector.score(data.val).maps, detector.score(data.test).maps)
            if seed == 0:
                _figure(detector, data.test, RESULTS / f"{dataset}-vae_gradcam-maps{_suffix(budget)}.png")
    if detector_name == "padim" and data.test.has_masks:
        maps["distance map"] = _map_metrics(data, detector.score(data.val).maps, detector.score(data.test).maps)
    score_variants = None
    if detector_name == "draem":
        import numpy as np

        own = detector.config.standardise
        both = {}  # the maps as they are, and standardised by the training normals' maps
        for mode in ("none", "both"):
            detector.config.standardise = mode
            both[mode] = detector.score(data.val).maps, detector.score(data.test).maps  # once, for both uses
        detector.config.standardise = own
        if data.test.has_masks:
            maps["defect map"] = _map_metrics(data, *both["none"])
            maps["standardised map"] = _map_metrics(data, *both["both"])
        classes = np.array([r.defect_class or "" for r in data.test.records])
        score_variants = image_score_variants(*both["none"], data.val.labels, data.test.labels, classes,
                                              standardised=both["both"])

    def score(images, batch):
        detector.config.score_batch_size = batch
        detector.score(images, maps=False)

    timings = score_speed(score, data.test.raw_images())
    return {
        "dataset": dataset, "detector": config_name, "k": k, "seed": seed, "params": params, "budget": budget,
        "auroc": metrics["test"]["auroc"], "auprc": metrics["test"]["auprc"], "f1": metrics["test"]["f1"],
        "val_auroc": metrics["val"].get("auroc"), "f1_mean_std": f1_mean_std, "maps": maps,
        "image_score_variants": score_variants,
        "standardise": getattr(detector.config, "standardise", None),
        **({"pretraining": pretraining} if pretraining else {}),
        "fit_seconds": metrics["timing"]["fit_seconds"], **timings,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "best_epoch": metrics["training"]["best_epoch"], "threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0], "machine": machine_description(),
    }


def _suffix(budget: str) -> str:
    return "" if budget == "smoke" else f"-{budget}"


def _name(row: dict) -> str:
    """The detector column: its name, and its epochs where a row's budget is not the smoke one."""
    epochs = (row.get("params") or {}).get("epochs")
    trained = epochs is not None  # padim trains nothing: its rows are the same on every budget
    return row["detector"] if row.get("budget", "smoke") == "smoke" or not trained else f"{row['detector']} ({epochs} epochs)"


def _fcdd_rows() -> list[dict]:
    rows = []
    for path in sorted(FCDD_RESULTS.glob("*-k0-s*-auto.json")):
        row = json.loads(path.read_text())
        row.update(detector="fcdd (K=0 rows of benchmarks/results/fcdd)", maps={})
        if row.get("pixel_auroc") is not None:
            row["maps"] = {"stride-8 map": {"all": {"pixel_auroc": row["pixel_auroc"], "aupro": row.get("aupro")},
                                            "per_class": {}}}
        rows.append(row)
    return rows


def _fmt(values, digits=3) -> str:
    return mean_std_cell(values, digits)


def _groups(rows):
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], _name(row), row["k"]), []).append(row)
    return sorted(groups.items())


def render(rows: list[dict], command: str) -> tuple[str, dict]:
    ours = [r for r in rows if not r["detector"].startswith("fcdd") and r["detector"] != PEER
            and r["detector"] not in LEVERS]
    levers = [r for r in rows if r["detector"] in LEVERS]
    peer = [r for r in rows if r["detector"] == PEER]
    lines = [
        f"Command: `{command}`  ",
        f"Date: {time.strftime('%Y-%m-%d')}; rows ran on: {machines_summary(r['machine'] for r in ours + peer + levers)}.  ",
        f"Settings: {IMAGE_SIZE}x{IMAGE_SIZE} grayscale, fixed splits, from scratch; vae_gradcam {PARAMS['vae_gradcam']} "
        f"(5 blocks, latent 32, beta 1e-3, lambda 0.01, t 20); draem {PARAMS['draem']} (synthetic perlin + cutpaste + "
        f"poisson from the training images, source_ops 3); padim with its defaults (resnet18 with random weights drawn "
        "from the seed, stages 1-3, 100 random channels, ridge 0.01, map sigma 4 px; nothing trained, normal images "
        f"only); rows marked with epochs: --budget gpu, vae_gradcam {GPU_PARAMS['vae_gradcam']}, "
        f"draem {GPU_PARAMS['draem']}; draem's 40-epoch rows: --budget gpu40, its GPU budget until 80 epochs was "
        f"adopted, draem {GPU40_PARAMS['draem']}. draem's map: 'standardised map' is its defect probability read pixel by "
        "pixel against the training normals' maps (standardise, its default: the map and image score it returns), "
        "'defect map' the probability as it is; rows that record a standardise read their image score from the "
        "standardised map, rows fitted before (no standardised map) from the map as it is. "
        "Image threshold max-F1 on val (F1 mean+std: the paper's mean + 1 std of "
        "the val normals); pixel threshold max-Dice on val; metrics on test; mean ± std over seeds. Machines were "
        "shared with other jobs: timings are upper bounds. FCDD rows: its own benchmark (25 epochs, stride-8 maps). "
        "Levers (measured options, not in the targets' best-of): "
        + "; ".join(f"{name} = {lever.detector} with {lever.options}" for name, lever in LEVERS.items()) + ".",
        "",
        "| dataset | detector | K | seeds | image AUROC | AUPRC | F1 (max-F1) | F1 (mean+std) | map | pixel AUROC | AUPRO 30% | Dice | IoU | fit s | ms/img b32 | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    per_class = ["", "Pixel AUROC / Dice per Magnetic Tile class (test normals + that class; threshold from val):", "",
                 "| detector | K | map | " + " | ".join(MT_CLASSES) + " |", "|---|---|---|" + "---|" * len(MT_CLASSES)]
    for (dataset, detector, k), group in _groups(rows):
        kinds = sorted({kind for r in group for kind in r["maps"]}) or ["-"]
        for kind in kinds:
            got = [r["maps"].get(kind, {}).get("all") or {} for r in group]
            lines.append(
                f"| {dataset} | {detector} | {k} | {len(group)} | {_fmt([r['auroc'] for r in group])} | "
                f"{_fmt([r['auprc'] for r in group])} | {_fmt([r['f1'] for r in group])} | "
                f"{_fmt([r.get('f1_mean_std') for r in group])} | {kind} | {_fmt([g.get('pixel_auroc') for g in got])} | "
                f"{_fmt([g.get('aupro') for g in got])} | {_fmt([g.get('dice') for g in got])} | "
                f"{_fmt([g.get('iou') for g in got])} | {_fmt([r['fit_seconds'] for r in group], 0)} | "
                f"{_fmt([r.get('ms_per_image_b32') for r in group], 2)} | {max(r.get('peak_rss_mb', 0) for r in group):.0f} |")
            if dataset == "magnetic_tile" and not detector.startswith(("fcdd", PEER)):
                cells = []
                for name in MT_CLASSES:
                    got_c = [(r["maps"].get(kind, {}).get("per_class") or {}).get(name) or {} for r in group]
                    cells.append(f"{_fmt([g.get('pixel_auroc') for g in got_c])} / {_fmt([g.get('dice') for g in got_c])}")
                per_class.append(f"| {detector} | {k} | {kind} | " + " | ".join(cells) + " |")

    def best(dataset, key):
        values = []
        for (d, detector, k), group in _groups([r for r in ours if r.get("budget") not in REPLACED_BUDGETS]):
            if d != dataset or k != 0:
                continue
            if key == "auroc":
                values.append(sum(r["auroc"] for r in group) / len(group))
            kinds = {kind for r in group for kind in r["maps"]}
            for own, alternative in OWN_MAP_OVER.items():
                if own in kinds:
                    kinds.discard(alternative)
            for kind in kinds:
                got = [(r["maps"][kind].get("all") or {}).get("pixel_auroc") for r in group if kind in r["maps"]]
                if key == "pixel" and all(v is not None for v in got) and got:
                    values.append(sum(got) / len(got))
        return max(values) if values else None

    summary = {"mt_k0_best_image_auroc": best("magnetic_tile", "auroc"),
               "mt_k0_best_pixel_auroc": best("magnetic_tile", "pixel"),
               "elpv_k0_best_image_auroc": best("elpv", "auroc"),
               "draem_peer_mt_k0_auroc": None}
    target_lines = ["", "Targets at K = 0 (best of our detectors, mean over its seeds):", ""]
    for label, key, target in (("Magnetic Tile image AUROC", "mt_k0_best_image_auroc", TARGETS["mt_image"]),
                               ("Magnetic Tile pixel AUROC", "mt_k0_best_pixel_auroc", TARGETS["mt_pixel"]),
                               ("ELPV image AUROC", "elpv_k0_best_image_auroc", TARGETS["elpv_image"])):
        value = summary[key]
        verdict = "not run" if value is None else ("met" if value >= target else f"missed by {target - value:.3f}")
        target_lines.append(f"- {label} >= {target}: {'n/a' if value is None else f'{value:.3f}'} ({verdict})")
    comparisons = []
    for dataset in ("magnetic_tile", "elpv"):
        for budget in sorted({r.get("budget", "smoke") for r in peer if r["dataset"] == dataset}):
            theirs = [r for r in peer if r["dataset"] == dataset and r.get("budget", "smoke") == budget]
            seeds = sorted(r["seed"] for r in theirs)
            epochs = theirs[0]["params"]["epochs"]
            # the same epochs budget: our draem's rows at the peer's epochs only
            mine = [r for r in ours if r["dataset"] == dataset and r["detector"] == "draem" and r["k"] == 0
                    and r.get("budget", "smoke") == budget and r["seed"] in seeds and r["params"]["epochs"] == epochs]
            peer_auroc = sum(r["auroc"] for r in theirs) / len(theirs)
            if dataset == "magnetic_tile" and (summary["draem_peer_mt_k0_auroc"] is None or budget == "gpu"):
                summary["draem_peer_mt_k0_auroc"] = peer_auroc
            line = f"{dataset}, {epochs} epochs, seeds {seeds}: anomalib Draem {peer_auroc:.3f}"
            if mine:
                ours_auroc = sum(r["auroc"] for r in mine) / len(mine)
                line += (f", our draem {ours_auroc:.3f} ({'ahead' if ours_auroc > peer_auroc else 'behind'} by "
                         f"{abs(ours_auroc - peer_auroc):.3f}, over our seeds among those)")
            comparisons.append(line)
    if comparisons:
        target_lines.append("- ahead of anomalib Draem at the same budget (test image AUROC): " + "; ".join(comparisons)
                            + ". `draem_peer_mt_k0_auroc`: the Magnetic Tile peer (the GPU budget's where run).")
    else:
        target_lines.append("- ahead of anomalib Draem at the same budget: peer not run yet (`benchmarks/.venv/bin/python "
                            "benchmarks/zero_label.py --configs anomalib_draem:0`, or `on_device.sh draem_peer`); "
                            "`draem_peer_mt_k0_auroc` is null.")
    target_lines += (_lever_lines(ours + levers, levers) + _budget_lines(ours) + _score_variant_lines(ours + levers)
                     + _option_map_lines(ours + levers))
    figures = [f"", *[f"![{p.stem}](benchmarks/results/zero_label/{p.name})" for p in sorted(RESULTS.glob("*.png"))]]
    return "\n".join(lines + per_class + target_lines + figures), summary


def _defect_map_pixel_auroc(row: dict) -> float | None:
    return (row["maps"].get("defect map", {}).get("all") or {}).get("pixel_auroc")


def _score_reading(row: dict) -> str:
    """How a row's image score read draem's map: its `standardise` ("none" for rows fitted before it)."""
    return row.get("standardise") or "none"


def _paired_cells(pairs: list[tuple[dict, dict]]) -> str:
    """'val AUROC a vs b; test AUROC ...; test pixel AUROC ...' over (row, base row) pairs of shared seeds:
    val first, as a lever or budget is adopted on val only. Where the two rows read their image scores
    differently (draem's standardise), both are read from the map as it is (a standardised row's "pool11"
    variant) when every standardised row recorded it; otherwise the cells say that the readings differ."""
    cells, note = [], ""
    val_of, test_of = (lambda r: r.get("val_auroc")), (lambda r: r["auroc"])
    if any(_score_reading(a) != _score_reading(b) for a, b in pairs):
        standardised = [r for pair in pairs for r in pair if _score_reading(r) != "none"]
        if all("pool11" in (r.get("image_score_variants") or {}) for r in standardised):
            def as_it_is(split, own):
                return lambda r: own(r) if _score_reading(r) == "none" else r["image_score_variants"]["pool11"][split]

            val_of, test_of = as_it_is("val_auroc", val_of), as_it_is("test_auroc", test_of)
            note = " (image scores of both read from the map as it is)"
        else:
            note = (" (image scores read differently: "
                    + " vs ".join(sorted({_score_reading(r) for pair in pairs for r in pair}, reverse=True))
                    + " standardisation)")
    for label, get in (("val AUROC", val_of), ("test AUROC", test_of),
                       ("test pixel AUROC", _defect_map_pixel_auroc)):
        # rows kept from before val AUROC was recorded have none: compare on the seeds that have both
        both = [(get(a), get(b), a["seed"]) for a, b in pairs if get(a) is not None and get(b) is not None]
        if both:
            mean, base_mean = (sum(x[i] for x in both) / len(both) for i in (0, 1))
            on = "" if len(both) == len(pairs) else f" (seeds {[x[2] for x in both]})"
            cells.append(f"{label} {mean:.3f} vs {base_mean:.3f}{on}")
    return "; ".join(cells) + note


def _pairs(group: list[dict], rows: list[dict], detector: str, budget: str) -> list[tuple[dict, dict]]:
    """(row, base row) for each row of `group` whose seed `detector` also ran at `budget` (same dataset, K)."""
    dataset, k = group[0]["dataset"], group[0]["k"]
    base = {r["seed"]: r for r in rows if r["dataset"] == dataset and r["detector"] == detector and r["k"] == k
            and r.get("budget", "smoke") == budget}
    return [(r, base[r["seed"]]) for r in group if r["seed"] in base]


def _pretraining_text(pretrained: dict | list[dict]) -> str:
    """What a lever line says of the pretraining behind its weights (one run, or one per ensemble member)."""
    runs = pretrained if isinstance(pretrained, list) else [pretrained]
    first = runs[0]
    walls = " + ".join(f"{run['wall_seconds']:.0f}" for run in runs)
    seeds = f" (one per member, seeds {', '.join(str(run.get('seed')) for run in runs)})" if len(runs) > 1 else ""
    return (f"{first['method']}, {first['epochs']} epochs on the training images of {first['source']}{seeds}, "
            f"{walls} s wall on {first['device']}")


def _lever_lines(rows: list[dict], levers: list[dict]) -> list[str]:
    """Each lever beside the config it is compared with (LEVERS) on the seeds both ran (same dataset, K,
    budget)."""
    lines = []
    for (dataset, name, k), group in _groups(levers):
        detector = LEVERS[group[0]["detector"]].compared_with
        pairs = _pairs(group, rows, detector, group[0].get("budget", "smoke"))
        if pairs:
            seeds = sorted(a["seed"] for a, _ in pairs)
            line = f"- lever {name} vs {detector}, {dataset} K = {k}, seeds {seeds}: {_paired_cells(pairs)}"
            pretrained = group[0].get("pretraining")
            if pretrained:  # done once before the fits (not in their fit time), shared by every seed
                line += f"; its weights: {_pretraining_text(pretrained)}"
            lines.append(line + ".")
    return ["", "Levers beside the config each is compared with (same seeds):", "", *lines] if lines else []


def _budget_lines(rows: list[dict]) -> list[str]:
    """Each detector's rows at a budget beside its rows at the budget that replaced it (REPLACED_BUDGETS),
    on the seeds both ran (same dataset, K)."""
    lines = []
    for old, new in REPLACED_BUDGETS.items():
        for (dataset, name, k), group in _groups([r for r in rows if r.get("budget") == new]):
            pairs = _pairs(group, rows, group[0]["detector"], old)
            if pairs:
                seeds = sorted(a["seed"] for a, _ in pairs)
                lines.append(f"- {name} (--budget {new}) vs {pairs[0][1]['params']['epochs']} epochs (--budget {old}), "
                             f"{dataset} K = {k}, seeds {seeds}: {_paired_cells(pairs)}.")
    return ["", "Budgets beside the budget each replaced (same seeds):", "", *lines] if lines else []


def _option_map_lines(rows: list[dict]) -> list[str]:
    """Each detector's own map beside the map it replaced (OWN_MAP_OVER), from the same fits: pixel AUROC on
    val (the rule for choosing) and test, and on Magnetic Tile per class on test."""
    lines = []
    for (dataset, name, k), group in _groups(rows):
        for own, alternative in OWN_MAP_OVER.items():
            pairs = [(r["maps"][own], r["maps"][alternative]) for r in group
                     if own in r["maps"] and alternative in r["maps"]]
            if not pairs:
                continue

            def pixel_auroc(index, split, name=None):
                got = [pair[index].get(split) if name is None else (pair[index].get("per_class") or {}).get(name)
                       for pair in pairs]
                return _fmt([(g or {}).get("pixel_auroc") for g in got])

            cells = [f"val pixel AUROC {pixel_auroc(0, 'val')} vs {pixel_auroc(1, 'val')}",
                     f"test {pixel_auroc(0, 'all')} vs {pixel_auroc(1, 'all')}"]
            per_class = [f"{c} {pixel_auroc(0, None, c)} vs {pixel_auroc(1, None, c)}"
                         for c in MT_CLASSES if any(c in (p[0].get("per_class") or {}) for p in pairs)]
            seeds = sorted(r["seed"] for r in group if own in r["maps"] and alternative in r["maps"])
            lines.append(f"- {name}, {dataset} K = {k}, seeds {seeds}: {own} vs {alternative}: "
                         + "; ".join(cells + per_class) + ".")
    return ["", "A detector's own map beside the map it replaced (same fits; chosen on val):", "", *lines] if lines else []


def _score_variant_lines(rows: list[dict]) -> list[str]:
    """For each group whose every row recorded `image_score_variants`: the image AUROC on val and test of
    each way of reading the image score from the same fits' maps, and on Magnetic Tile per class."""
    lines = []
    for (dataset, name, k), group in _groups([r for r in rows if r.get("image_score_variants")]):
        variants = list(group[0]["image_score_variants"])
        classes = MT_CLASSES if dataset == "magnetic_tile" else ()
        lines += ["", f"{dataset}, {name}, K = {k}, seeds {sorted(r['seed'] for r in group)}:", "",
                  "| " + " | ".join(["image score", "val AUROC", "test AUROC", *classes]) + " |",
                  "|---|---|---|" + "---|" * len(classes)]
        for variant in variants:
            got = [r["image_score_variants"][variant] for r in group]
            cells = [_fmt([g["val_auroc"] for g in got]), _fmt([g["test_auroc"] for g in got])]
            cells += [_fmt([g["per_class"].get(c) for g in got]) for c in classes]
            if variant == "zpool11":
                label = "max after 11x11 mean filter, map standardised per pixel by the training normals' maps"
            elif variant.startswith("pool"):
                label = f"max after {variant[4:]}x{variant[4:]} mean filter"
            else:
                label = f"mean of the top {float(variant[3:]):.0%} of pixels"
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if not lines:
        return []
    return ["", "draem's image score read from the same fits' maps in other ways (`image_score_variants`; draem's "
            "own: the 11x11 filter of the standardised map for rows that record a standardise, of the map as "
            "it is for rows fitted before; per class: test image AUROC of that class's defects against every test "
            "normal):", *lines]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["magnetic_tile", "elpv"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--configs", nargs="+", default=[f"{d}:{k}" for d, k in CONFIGS],
                        help="detector:K pairs to run (default: every one)")
    parser.add_argument("--jobs", type=int, default=1, help="fits side by side (each gets cores / jobs threads)")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="smoke",
                        help="smoke: the 2-core CPU's epochs; gpu: the lent GPU's (GPU_PARAMS); gpu40: the GPU "
                        "budget before draem's went to 80 epochs (GPU40_PARAMS)")
    parser.add_argument("--report", action="store_true", help="only re-render from the kept rows")
    parser.add_argument("--one", nargs=5, metavar=("DATASET", "DETECTOR", "K", "SEED", "BUDGET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], int(args.one[2]), int(args.one[3]), args.one[4])))
        return
    from _table import run_in_parallel

    configs = [(c.split(":")[0], int(c.split(":")[1])) for c in args.configs]
    jobs = [(d, det, k, s) for s in args.seeds for d in args.datasets for det, k in configs]

    def fit(job):
        dataset, detector, k, seed = job
        path = RESULTS / f"{dataset}-{detector}-k{k}-s{seed}{_suffix(args.budget)}.json"
        if args.report:
            return json.loads(path.read_text()) if path.is_file() else None
        started = time.time()
        try:
            row, ran = kept_row(path, __file__, ["--one", dataset, detector, str(k), str(seed), args.budget],
                                subprocess_env(args.jobs))
        except FitFailed as error:
            print(error, file=sys.stderr, flush=True)
            return None
        if ran:
            print(f"{dataset} {detector} K={k} seed={seed}: AUROC {row['auroc']:.3f} ({time.time() - started:.0f} s)",
                  flush=True)
        return row

    rows = [r for r in run_in_parallel(fit, jobs, args.jobs) if r is not None]
    rows += [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))
             if p.name != "summary.json" and json.loads(p.read_text()) not in rows]
    command = ("python benchmarks/zero_label.py " + " ".join(sys.argv[1:])).strip()
    text, summary = render(rows + _fcdd_rows(), command)
    print(text)
    replace_section(REPO / "BENCHMARKS.md", "zero-label", "Zero labels, still localised (vae_gradcam, draem, padim)", text)
    update_summary(RESULTS, summary)


if __name__ == "__main__":
    main()
