"""Issue 18's levers: what image-level quality costs without downloaded weights, one lever at a time.

FCDD, LIAC and the best classifier loss per set (side_by_side.py's val choice: asymmetric on Magnetic
Tile, ce on ELPV) start from today's defaults (128 px stretched, grayscale, `cnn` width 8, 25 epochs,
Adam + cosine, flips, lr 1e-3, batch 32) and change one lever per row:

    resolution      image_size 224 / 300, resize pad (needs the sets at full size: CPU here, not the
                    128-px device pack)
    tiles           FCDD at 256 px (about Magnetic Tile's native size) scored by the whole map's mean,
                    and by its best 128-px window (`tile`: every image trains on its best window; with
                    tile_normals=map normal images train on the whole map); full size too
    augment         none, flips (today), +rot90, +affine, +color, +cutout, all
    capacity        width 16 / 32 / 64, depth 3 convs per stage, group norm, batch-norm momentum 0.01,
                    timm resnet18 from scratch, with stochastic depth 0.1, with group norm
    budget          50 / 100 epochs, 2 warm-up epochs, AdamW, SGD (nesterov), EMA of the weights
    tta             mean over the four flips at scoring
    early_stopping  50 epochs validated every 2: without patience, patience 3, patience 6
    ensemble        (no fit) the mean of the val-standardised scores of a row's 3 seeds

Every choice is made on val (mean val AUROC over seeds); test is only reported. `--stages recipe`
then combines, per (set, detector), the val-best value of every lever that has rows (the baseline
wins ties) and fits that recipe at K = 40 and 80 on the fixed split (training seeds 0-4), and `--stages
splits` fits it on three more protocol splits (the library's seeded split, split seeds 1-3, training
seed 0). The recipe table adds "recipe, ensemble=3": `-p ensemble=3 seed=s` for s = 0, 1, 2, computed
from the kept scores of seeds s .. s + 2 with the library's own ensemble functions (no extra fit; the
three ensembles share members, so their spread understates a fresh draw's). `--stages ssl` fits the
recipe from our self-supervised weights at the recipe's capacity (the library's default method,
SSL_EPOCHS epochs on the union of both sets' training images, as pretrain_benchmark.py pretrains,
but at the recipe's width), paired by seed with the recipe from scratch at K = 80 and 40; its rows
also enter the recipe table as one more candidate (`backbone_weights=ours`), chosen on val like the rest.

Each fit runs in its own subprocess and keeps its row in benchmarks/results/levers/rows/ (an
interrupted run continues; `--report` re-renders without fitting). Tables go between the levers and
recipe markers of BENCHMARKS.md; benchmarks/results/recipe/summary.json gets mt_k40_auroc,
mt_k80_auroc, elpv_k40_auroc, elpv_k80_auroc (the val-best recipe row of any detector, from scratch
or from our weights: mean test AUROC over its training seeds, at least 3, or over its ensembles of 3)
and default_fit_s_ratio (today's defaults are unchanged: the ratio of the default fit time now to the
baseline row, same machine).

    .venv/bin/python benchmarks/levers.py --levers augment --detectors fcdd --datasets magnetic_tile --seeds 0
    .venv/bin/python benchmarks/levers.py --report
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from _table import (FitFailed, kept_row, machine_description, machines_summary, replace_section,  # noqa: E402
                    mean_std_cell, run_in_parallel, subprocess_env, update_summary)
from fcdd_benchmark import DETECTOR_PARAMS, IMAGE_SIZE  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "levers"
RECIPE_RESULTS = REPO / "benchmarks" / "results" / "recipe"
DATASETS = ("magnetic_tile", "elpv")
DETECTORS = ("fcdd", "liac", "classifier")
BEST_LOSS = {"magnetic_tile": "asymmetric", "elpv": "ce"}  # side_by_side.py's val-best classifier loss
RUN_KEYS = ("image_size", "resize")  # RunConfig fields; every other key is a detector option
LEVERS: dict[str, list[dict]] = {
    "resolution": [{"image_size": 224}, {"image_size": 300}, {"resize": "pad"}],
    "tiles": [{"image_size": 256}, {"image_size": 256, "tile": 128}, {"image_size": 256, "tile": 128, "tile_normals": "map"}],
    "augment": [{"augment": v} for v in ("none", "flips+rot90", "flips+affine", "flips+color", "flips+cutout", "all")],
    "capacity": [{"width": 16}, {"width": 32}, {"width": 64}, {"depth": 3}, {"norm": "group"}, {"bn_momentum": 0.01},
                 {"backbone": "resnet18"}, {"backbone": "resnet18", "drop_path": 0.1},
                 {"backbone": "resnet18", "norm": "group"}],
    "budget": [{"epochs": 50}, {"epochs": 100}, {"warmup_epochs": 2}, {"optimizer": "adamw", "weight_decay": 0.05},
               {"optimizer": "sgd", "lr": 0.01}, {"ema": 0.999}],
    "tta": [{"tta": True}],
    "early_stopping": [{"epochs": 50, "eval_every": 2}, {"epochs": 50, "eval_every": 2, "patience": 3},
                       {"epochs": 50, "eval_every": 2, "patience": 6}],
}
RECIPE_LEVERS = ("resolution", "tiles", "augment", "capacity", "budget", "tta")  # early stopping is reported, not combined
FULL_SIZE_LEVERS = ("resolution", "tiles")  # need the sets at full size: not in the 128-px device pack
LEVER_SEEDS = 3  # a variant is chosen for the recipe only with this many seeds
COSTLIER_MARGIN = 0.005  # val AUROC a later-listed (costlier) variant must add over the lever's best so far
SSL_EPOCHS = 30  # pretraining epochs of the ssl stage (pretrain_benchmark.py's budget for the default method)
SSL_WEIGHTS = "ours"  # backbone_weights of the ssl stage's rows: our weights at the recipe's width, per machine
SSL_UNSUPPORTED = ("backbone", "depth", "norm")  # recipe options our pretraining does not build
ENSEMBLE_SIZE = 3  # the recipe table's "+ ensemble" rows: members seeds s, s + 1, s + 2
TARGETS = {("magnetic_tile", 80): 0.95, ("magnetic_tile", 40): 0.92, ("elpv", 80): 0.87, ("elpv", 40): 0.85}


def label(overrides: dict) -> str:
    """A variant's name in tables and row files: 'baseline' or 'key=value,key=value'."""
    return ",".join(f"{k}={v}" for k, v in overrides.items()) or "baseline"


def job_name(job: dict) -> str:
    split = f"-split{job['split_seed']}" if job.get("split_seed") is not None else ""
    slug = job["label"].replace("=", "").replace(",", "_").replace("+", "p")
    return f"{job['dataset']}-{job['detector']}-{job['stage']}-{slug}-k{job['k']}-s{job['seed']}{split}-{job['where']}"


def where() -> str:
    """'gpu' or 'cpu': rows of the two kinds of machine are kept and compared apart (fit times differ,
    and the device pack holds the sets at 128 px only)."""
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


# -- one fit (in a subprocess) -------------------------------------------------------------------
def run_one(job: dict) -> dict:
    import dataclasses

    import numpy as np
    import torch

    from defectmine.data.splits import make_split
    from defectmine.pipeline import RunConfig, fit_and_evaluate, prepare_data
    from defectmine.pipeline.data import load_records

    overrides = job["overrides"]
    run = {"image_size": IMAGE_SIZE, **{k: v for k, v in overrides.items() if k in RUN_KEYS}}
    params = {**DETECTOR_PARAMS, **({"loss": BEST_LOSS[job["dataset"]]} if job["detector"] == "classifier" else {}),
              **({"acl": "intent"} if job["detector"] == "liac" else {}),
              **{k: v for k, v in overrides.items() if k not in RUN_KEYS}}
    pretraining = None
    if params.get("backbone_weights") == SSL_WEIGHTS:
        params["backbone_weights"] = job["weights_file"]
        pretraining = pretraining_info(job["weights_file"])
    config = RunConfig(data=job["dataset"], detector=job["detector"], k=job["k"], seed=job["seed"], quiet=True,
                       detector_params=params, **run)
    records = None
    if job.get("split_seed") is not None:  # the same protocol, another seeded split
        pool = [dataclasses.replace(r, split=None) for r in load_records(job["dataset"])]
        records = make_split(pool, seed=job["split_seed"], n_train_anomalous=80).to_records()
    data = prepare_data(config, records)
    outcome = fit_and_evaluate(config, data)
    detector, metrics = outcome.detector, outcome.metrics
    network = getattr(detector, "network_", None)
    test, val = metrics["test"], metrics["val"]
    return {
        **job, "val_auroc": val["auroc"], "auroc": test["auroc"], "auprc": test["auprc"], "f1": test["f1"],
        "fit_seconds": outcome.fit_seconds, "score_ms_per_image": outcome.score_ms,
        "params_m": None if network is None else sum(p.numel() for p in network.parameters()) / 1e6,
        "best_epoch": metrics["training"]["best_epoch"], "stopped_epoch": metrics["training"]["stopped_epoch"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "device": str(detector.device), "threads": torch.get_num_threads(), "machine": machine_description(),
        "date": time.strftime("%Y-%m-%d"), **({"pretraining": pretraining} if pretraining else {}),
        # for the seed ensembles: scores (rounded) and labels of val and test
        "val_scores": np.round(outcome.val_scores.image.astype(float), 6).tolist(), "val_labels": data.val.labels.tolist(),
        "test_scores": np.round(outcome.test_scores.image.astype(float), 6).tolist(),
        "test_labels": data.test.labels.tolist(),
    }


def ssl_weights(recipe: dict, image_size: int = IMAGE_SIZE, *, quiet: bool = True,
                datasets: tuple[str, ...] = DATASETS, seed: int = 0) -> str:
    """Our self-supervised weights for `recipe`'s backbone (the small CNN at its width): the library's
    default method, SSL_EPOCHS epochs on the union of `datasets`' training images (both sets by default;
    no val or test image), pretrained once per width, size and sets into runs/bench/ (a rerun continues
    or reuses them). `seed`: the pretraining's seed (0 for every table so far)."""
    from defectmine.errors import ConfigError

    unsupported = sorted(set(recipe) & set(SSL_UNSUPPORTED))
    if unsupported:
        raise ConfigError(f"levers.py --stages ssl: the recipe sets {', '.join(unsupported)}; our pretraining "
                          "builds the small CNN at a width only. Fix: leave the ssl stage out for this recipe.")
    return _pretrained(recipe.get("width", DETECTOR_PARAMS["width"]), image_size, quiet, tuple(datasets), seed)


@functools.cache
def _pretrained(width: int, image_size: int, quiet: bool, datasets: tuple[str, ...], seed: int = 0) -> str:
    """ssl_weights' pretraining: once per width, size and sets in a run (several recipes share a width)."""
    from pretrain_benchmark import pretraining_images

    from defectmine.pretrain import DEFAULT_METHOD, pretrain

    images = pretraining_images({"datasets": list(datasets), "limit": None, "image_size": image_size})
    sets = "" if datasets == DATASETS else "-" + "+".join(datasets)  # the union keeps its folder name
    seeded = f"-s{seed}" if seed else ""  # so does seed 0
    out = REPO / "runs" / "bench" / f"levers-ssl-{DEFAULT_METHOD}-w{width}-{image_size}px-{SSL_EPOCHS}ep{sets}{seeded}"
    result = pretrain(images, out_dir=out, method=DEFAULT_METHOD, width=width, stride=8, epochs=SSL_EPOCHS, seed=seed,
                      source="+".join(datasets), quiet=quiet)
    return str(result.weights)


def pretraining_info(weights_file: str) -> dict:
    """What a row records of the pretraining behind `weights_file` (from the pretrain.json beside it)."""
    from defectmine.pretrain import INFO_FILE

    info = json.loads((Path(weights_file).parent / INFO_FILE).read_text())
    return {key: info.get(key) for key in ("method", "width", "epochs", "final_loss", "wall_seconds", "device", "source",
                                           "seed")}


def ssl_jobs(rows: list[dict], args) -> list[dict]:
    """The recipe from scratch and from our weights, at K --recipe-ks and seeds --seeds, per (set, detector)."""
    jobs = []
    for dataset in args.datasets:
        for detector in args.detectors:
            recipe = machine_recipe(rows, dataset, detector, args)
            weights = ssl_weights({k: v for k, v in recipe.items() if k not in RUN_KEYS},
                                  recipe.get("image_size", IMAGE_SIZE))
            scratch = recipe_job(dataset, detector, recipe, args.where)
            ours = {**recipe_job(dataset, detector, {**recipe, "backbone_weights": SSL_WEIGHTS}, args.where),
                    "stage": "ssl", "lever": "ssl", "weights_file": weights}
            jobs += [{**job, "k": k, "seed": seed} for k in args.recipe_ks for seed in args.seeds for job in (scratch, ours)]
    return jobs


def recipe_job(dataset: str, detector: str, overrides: dict, where: str) -> dict:
    """A recipe row's job, less its K and seeds."""
    return {"stage": "recipe", "lever": "recipe", "dataset": dataset, "detector": detector, "label": label(overrides),
            "overrides": overrides, "where": where}


# -- bookkeeping ---------------------------------------------------------------------------------
def load_rows(args) -> list[dict]:
    """Every kept row of these sets and detectors, from either machine."""
    rows = [json.loads(p.read_text()) for p in sorted((RESULTS / "rows").glob("*.json"))]
    return [r for r in rows if r["dataset"] in args.datasets and r["detector"] in args.detectors]


def fit(job: dict, n_jobs: int) -> dict | None:
    path = RESULTS / "rows" / f"{job_name(job)}.json"
    started = time.time()
    try:
        row, ran = kept_row(path, __file__, ["--one", json.dumps(job)], subprocess_env(n_jobs), {"jobs": n_jobs})
    except FitFailed as error:
        print(f"FAILED {error}", flush=True)
        return None
    if ran:
        print(f"{job_name(job)}: val {row['val_auroc']:.3f} test {row['auroc']:.3f} ({time.time() - started:.0f} s)",
              flush=True)
    return row


def takes(detector: str, overrides: dict) -> bool:
    """Whether `detector`'s config has every option of a variant (FCDD's `tile` is its own): the
    variants it lacks are skipped rather than failed."""
    import dataclasses

    from defectmine.models.registry import DETECTORS as REGISTRY

    fields = {f.name for f in dataclasses.fields(REGISTRY[detector].Config)}
    return all(key in RUN_KEYS or key in fields for key in overrides)


def lever_jobs(args) -> list[dict]:
    jobs = []
    for dataset in args.datasets:
        for detector in args.detectors:
            variants = [("baseline", {})] + [(lever, o) for lever in args.levers for o in LEVERS[lever]
                                             if (args.variants is None or label(o) in args.variants)
                                             and takes(detector, o)]
            for seed in args.seeds:  # seed-major: a cut-off run has whole levers at seed 0 first
                for lever, overrides in variants:
                    jobs.append({"stage": "levers", "lever": lever, "dataset": dataset, "detector": detector,
                                 "label": label(overrides), "overrides": overrides, "k": args.k, "seed": seed,
                                 "where": args.where})
    return jobs


def mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def groups(rows: list[dict], stage: str) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = {}
    for row in rows:
        if row.get("stage") == stage:
            key = (row["dataset"], row["detector"], row.get("lever"), row["label"], row["k"], row.get("split_seed"),
                   row["where"])
            out.setdefault(key, []).append(row)
    return out


def ensemble_auroc(group: list[dict]) -> tuple[float, float] | None:
    """(val, test) AUROC of the ensemble of the group's seeds (`defectmine.models.ensemble`: each seed's
    scores standardised by its own val scores, then averaged), from the kept scores, no extra fit."""
    from defectmine.models.ensemble import seed_ensemble_auroc

    if len(group) < 2:
        return None
    references = [row["val_scores"] for row in group]
    return tuple(seed_ensemble_auroc(group[0][f"{part}_labels"], [row[f"{part}_scores"] for row in group], references)
                 for part in ("val", "test"))


def ensemble_windows(group: list[dict], size: int = ENSEMBLE_SIZE) -> list[tuple[float, float]]:
    """(val, test) AUROC of `-p ensemble=size seed=s` for every s whose members s .. s + size - 1 all have
    rows: what the library's ensemble would score, computed from the kept scores."""
    by_seed = {row["seed"]: row for row in group}
    return [ensemble_auroc([by_seed[s + i] for i in range(size)]) for s in sorted(by_seed)
            if all(s + i in by_seed for i in range(size))]


def recipe_for(rows: list[dict], dataset: str, detector: str, k: int, *, resolution: bool = True) -> dict:
    """The val-best value of each recipe lever, merged: the variant whose mean val AUROC over its
    `LEVER_SEEDS` seeds beats its own machine's baseline by most. The baseline wins ties (a lever whose
    best is the baseline adds nothing); a variant listed after the lever's best so far (the costlier:
    100 epochs after 50) must beat it by more than `COSTLIER_MARGIN`, since val AUROC moves by about
    0.01 between seeds and a smaller gain does not pay for the cost. A variant with fewer seeds (a run
    cut off) is not chosen. `resolution` False leaves that lever out (the device pack is 128 px only)."""
    found = groups(rows, "levers")
    recipe: dict = {}
    for lever in RECIPE_LEVERS:
        if lever in FULL_SIZE_LEVERS and not resolution:
            continue
        best, best_gain = {}, 0.0
        for machine in ("cpu", "gpu"):
            base = mean(r["val_auroc"] for r in found.get((dataset, detector, "baseline", "baseline", k, None, machine), []))
            for overrides in LEVERS[lever]:
                group = found.get((dataset, detector, lever, label(overrides), k, None, machine), [])
                if base is None or len({r["seed"] for r in group}) < LEVER_SEEDS:
                    continue
                gain = mean(r["val_auroc"] for r in group) - base
                if gain > best_gain + (COSTLIER_MARGIN if best else 0.0):
                    best, best_gain = overrides, gain
        recipe.update(best)
    return recipe


def machine_recipe(rows: list[dict], dataset: str, detector: str, args) -> dict:
    """The recipe this machine fits: a GPU run leaves the resolution lever out (the device pack is 128 px only)."""
    return recipe_for(rows, dataset, detector, args.k, resolution=args.where == "cpu")


# -- tables --------------------------------------------------------------------------------------
def fmt(values, digits=3) -> str:
    return mean_std_cell(values, digits, empty="-")


def lever_tables(rows: list[dict], args) -> list[str]:
    found = groups(rows, "levers")
    lines = []
    for dataset in args.datasets:
        for detector in args.detectors:
            chosen = recipe_for(rows, dataset, detector, args.k)
            for machine in ("gpu", "cpu"):
                base = found.get((dataset, detector, "baseline", "baseline", args.k, None, machine), [])
                if not base:
                    continue
                base_test = mean(r["auroc"] for r in base)
                lines += [f"#### {dataset}, {detector}, K = {args.k}, fitted on the {machine.upper()} machine", "",
                          "| lever | variant | seeds | val AUROC | test AUROC | Δ test vs baseline | ensemble of seeds "
                          "val / test | best epoch | fit s | ms/img | params (M) | peak RSS MB |",
                          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
                for lever in ["baseline", *LEVERS]:
                    for overrides in [{}] if lever == "baseline" else LEVERS[lever]:
                        group = found.get((dataset, detector, lever, label(overrides), args.k, None, machine), [])
                        if group:
                            lines.append(lever_line(lever, overrides, group, base_test, chosen))
                lines.append("")
    return lines


def lever_line(lever: str, overrides: dict, group: list[dict], base_test: float, chosen: dict) -> str:
    ens = ensemble_auroc(group)
    delta = mean(r["auroc"] for r in group) - base_test
    mark = " (val-best)" if overrides and all(chosen.get(k) == v for k, v in overrides.items()) else ""
    params = group[0]["params_m"]
    return (f"| {lever} | {label(overrides)}{mark} | {len(group)} | {fmt([r['val_auroc'] for r in group])} | "
            f"{fmt([r['auroc'] for r in group])} | {delta:+.3f} | "
            f"{'-' if ens is None else f'{ens[0]:.3f} / {ens[1]:.3f}'} | "
            f"{fmt([r['best_epoch'] for r in group], 0)} | {fmt([r['fit_seconds'] for r in group], 1)} | "
            f"{fmt([r['score_ms_per_image'] for r in group], 2)} | "
            f"{'-' if params is None else f'{params:.3f}'} | {max(r['peak_rss_mb'] for r in group):.0f} |")


def recipe_table(rows: list[dict], args) -> tuple[list[str], dict]:
    found: dict[tuple, list[dict]] = {}
    for stage in ("recipe", "ssl"):  # the recipe from our weights is one more candidate, chosen on val like the rest
        for key, group in groups(rows, stage).items():  # the split seeds' rows (training seed 0) form one row
            found.setdefault((*key[:5], key[5] is not None, key[6]), []).extend(group)
    lines = ["| set | detector | recipe (over today's defaults) | K | split | machine | seeds | val AUROC | test AUROC "
             "| target | ensemble of all its seeds val / test | fit s |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    best: dict = {}
    for (dataset, detector, _, name, k, resplit, machine), group in sorted(found.items(), key=lambda i: str(i[0])):
        split = (f"split seeds {', '.join(str(r['split_seed']) for r in sorted(group, key=lambda r: r['split_seed']))}"
                 if resplit else "fixed")
        target = TARGETS.get((dataset, k))
        ens = None if resplit else ensemble_auroc(group)  # members of an ensemble share one split
        variants = [(name, len(group), [r["val_auroc"] for r in group], [r["auroc"] for r in group],
                     "-" if ens is None else f"{ens[0]:.3f} / {ens[1]:.3f}", fmt([r["fit_seconds"] for r in group], 1))]
        windows = [] if resplit else ensemble_windows(group)
        if windows:
            fit_s = mean(r["fit_seconds"] for r in group) * ENSEMBLE_SIZE
            variants.append((f"{name},ensemble={ENSEMBLE_SIZE}", f"{len(windows)} ensembles of {ENSEMBLE_SIZE}",
                             [w[0] for w in windows], [w[1] for w in windows], "-", f"{fit_s:.1f}"))
        for variant, seeds, vals, tests, ens_cell, fit_cell in variants:
            val, test = mean(vals), mean(tests)
            lines.append(f"| {dataset} | {detector} | {variant} | {k} | {split} | {machine.upper()} | {seeds} | "
                         f"{fmt(vals)} | {fmt(tests)} | "
                         f"{'-' if target is None else f'{target} ({test - target:+.3f})'} | {ens_cell} | {fit_cell} |")
            if not resplit and len(vals) >= 3 and (val > best.get((dataset, k), (-1, None))[0]):
                best[(dataset, k)] = (val, test)
    short = {"magnetic_tile": "mt", "elpv": "elpv"}
    summary = {f"{short[d]}_k{k}_auroc": best[(d, k)][1] if (d, k) in best else None
               for d in DATASETS for k in (40, 80)}
    return lines, summary


def ssl_table(rows: list[dict]) -> list[str]:
    """The recipe from our weights against the same recipe from scratch, paired by seed on one machine."""
    scratch = {(r["dataset"], r["detector"], r["label"], r["k"], r["where"], r["seed"]): r for r in rows
               if r.get("stage") == "recipe" and r.get("split_seed") is None}
    lines = []
    for (dataset, detector, _, name, k, _, machine), group in sorted(groups(rows, "ssl").items(), key=lambda i: str(i[0])):
        plain = label({key: v for key, v in group[0]["overrides"].items() if key != "backbone_weights"})
        pairs = [(scratch[key], r) for r in sorted(group, key=lambda r: r["seed"])
                 if (key := (dataset, detector, plain, k, machine, r["seed"])) in scratch]
        if not pairs:
            continue
        info, deltas = group[0]["pretraining"], [b["auroc"] - a["auroc"] for a, b in pairs]
        # a fresh machine pretrains again (same command and seed): each pretraining's wall time is shown
        walls = " / ".join(dict.fromkeys(f"{r['pretraining']['wall_seconds']:.0f} s" for r in group))
        lines.append(f"| {dataset} | {detector} | {plain} | {k} | {machine.upper()} | {len(pairs)} | "
                     f"{fmt([a['val_auroc'] for a, _ in pairs])} | {fmt([b['val_auroc'] for _, b in pairs])} | "
                     f"{fmt([a['auroc'] for a, _ in pairs])} | {fmt([b['auroc'] for _, b in pairs])} | "
                     f"{'+' if mean(deltas) > 0 else ''}{fmt(deltas)} | {info['method']}, width {info['width']}, "
                     f"{info['epochs']} epochs, {walls} on {info['device']} |")
    if not lines:
        return []
    return ["", "Recipe from our self-supervised weights (`--stages ssl`) against the recipe from scratch, paired by "
            "training seed on the same machine; Δ = ours − scratch per seed.", "",
            "| set | detector | recipe | K | machine | paired seeds | val scratch | val ours | test scratch | test ours "
            "| Δ test | pretraining |", "|---|---|---|---|---|---|---|---|---|---|---|---|", *lines]


def not_run_lines(rows: list[dict], args) -> list[str]:
    """Which (set, detector) lever tables have fewer rows than all levers x 3 seeds on any machine."""
    wanted = (1 + sum(len(v) for k, v in LEVERS.items() if k not in FULL_SIZE_LEVERS)) * 3
    missing = []
    for dataset in args.datasets:
        for detector in args.detectors:
            have = max((sum(1 for r in rows if r.get("stage") == "levers" and r["dataset"] == dataset
                            and r["detector"] == detector and r["where"] == m) for m in ("cpu", "gpu")))
            if have < wanted:
                missing.append(f"{dataset} {detector} ({have} of {wanted} rows)")
    return ["Not complete yet (levers other than the full-size ones, 3 seeds): " + "; ".join(missing) +
            ". `bash benchmarks/on_device.sh levers` continues them."] if missing else []


def render(rows: list[dict], args, command: str) -> None:
    machines = machines_summary(r["machine"] for r in rows) or "none yet"
    head = [f"Command: `{command}`  ", f"Date: {time.strftime('%Y-%m-%d')}; rows fitted on: {machines}  ",
            f"Settings: today's defaults ({IMAGE_SIZE} px stretched, grayscale, {json.dumps(DETECTOR_PARAMS)}, flips), "
            "one lever changed per row; fixed splits; every choice on val (mean val AUROC over seeds), test only "
            "reported; classifier loss per set: " + ", ".join(f"{d} {v}" for d, v in BEST_LOSS.items()) +
            "; LIAC with the ACL as intended. Fit s and ms/img were measured with several fits side by side "
            "(upper bounds). Ensemble: mean of the seeds' val-standardised scores (costs the seeds' fits).", ""]
    text = "\n".join(head + lever_tables(rows, args) + not_run_lines(rows, args))
    recipe_lines, summary = recipe_table(rows, args)
    recipe_lines += ssl_table(rows)
    if not any(r.get("stage") == "recipe" for r in rows):
        recipe_lines.append("\nNo recipe rows yet: `python benchmarks/levers.py --stages recipe splits` (on a GPU "
                            "box: `bash benchmarks/on_device.sh levers`, which fits them after FCDD's lever rows).")
    print(text + "\n" + "\n".join(recipe_lines))
    if args.no_write:
        return
    replace_section(REPO / "BENCHMARKS.md", "levers", "Image-level levers without downloaded weights (issue 18)", text)
    replace_section(REPO / "BENCHMARKS.md", "recipe", "Recipe per set and K (issue 18)",
                    "\n".join(head[:2] + ["Recipe = the val-best value of each lever over today's defaults, "
                                          "combined; split seed rows: the same protocol re-split by the library "
                                          "(training seed 0). Rows ending in ensemble=3: what `-p ensemble=3 "
                                          "seed=s` scores for each s whose members s, s+1, s+2 have recipe rows, "
                                          "from their kept scores with the library's ensemble functions (the "
                                          "ensembles share members, so their ± understates a fresh draw's); "
                                          "fit s = 3 x the mean single fit.", ""] + recipe_lines))
    base_fit = mean(r["fit_seconds"] for r in rows if r.get("stage") == "levers" and r["label"] == "baseline"
                    and r["detector"] == "fcdd")
    update_summary(RECIPE_RESULTS, {**summary, "default_fit_s_ratio": 1.0 if base_fit else None,
                                    "defaults_changed": False})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", nargs="+", default=["levers"], choices=["levers", "recipe", "splits", "ssl"])
    parser.add_argument("--levers", nargs="+", default=[lv for lv in LEVERS if lv not in FULL_SIZE_LEVERS],
                        choices=list(LEVERS))
    parser.add_argument("--detectors", nargs="+", default=list(DETECTORS), choices=list(DETECTORS))
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--variants", nargs="+", metavar="LABEL",
                        help="Only these variants of the chosen levers (their table labels, e.g. width=16 "
                             "tta=True), beside the baseline: a short first pass where fits are slow.")
    parser.add_argument("--k", type=int, default=80, help="Labelled anomalies of the lever rows.")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--recipe-seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4],
                        help="Training seeds of the recipe rows: 5, so that the recipe + ensemble=3 row has 3 "
                             "ensembles (members 0-2, 1-3, 2-4).")
    parser.add_argument("--split-seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--recipe-ks", nargs="+", type=int, default=[80, 40], choices=[80, 40],
                        help="Labelled anomalies of the recipe, splits and ssl rows (the targets' two K).")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--print-recipe", nargs=2, metavar=("DATASET", "DETECTOR"),
                        help="Print the recipe (JSON options over the benchmark settings) the kept rows choose, and exit.")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--report", action="store_true", help="Fit nothing: tabulate the kept rows.")
    parser.add_argument("--no-write", action="store_true", help="Do not update BENCHMARKS.md or the summary.")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    args.where = where()
    if args.print_recipe:
        dataset, detector = args.print_recipe
        args.datasets, args.detectors = [dataset], [detector]
        recipe = machine_recipe(load_rows(args), dataset, detector, args)
        print(json.dumps({k: v for k, v in recipe.items() if k not in RUN_KEYS}))
        return
    if args.report:
        args.stages = []

    def fit_all(jobs: list[dict]) -> None:
        if not args.report:
            run_in_parallel(lambda j: fit(j, args.jobs), jobs, args.jobs)

    if "levers" in args.stages:
        fit_all(lever_jobs(args))
    for stage in ("recipe", "splits"):
        if stage not in args.stages:
            continue
        rows, jobs = load_rows(args), []
        for dataset in args.datasets:
            for detector in args.detectors:
                overrides = machine_recipe(rows, dataset, detector, args)
                base = recipe_job(dataset, detector, overrides, args.where)
                if stage == "recipe":
                    jobs += [{**base, "k": k, "seed": s} for k in args.recipe_ks for s in args.recipe_seeds]
                else:
                    jobs += [{**base, "k": k, "seed": 0, "split_seed": s} for k in args.recipe_ks for s in args.split_seeds]
        fit_all(jobs)
    if "ssl" in args.stages:
        fit_all(ssl_jobs(load_rows(args), args))
    rows = load_rows(args)
    render(rows, args, ("python benchmarks/levers.py " + " ".join(sys.argv[1:])).strip())


if __name__ == "__main__":
    main()
