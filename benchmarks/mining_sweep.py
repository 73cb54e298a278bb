"""Damage-mining sweep of FCDD on Magnetic Tile and ELPV (fixed splits): test metrics against the number of
labelled anomalies, the mining-opportunity / over-mining phases and the recommendation per dataset.

Writes each sweep to runs/bench/mining-<dataset>/ (sweep_rows.csv after every fit, sweep.csv, sweep.json,
sweep.png, report.html), copies sweep.json and sweep.png to benchmarks/results/mining/, and writes the
tables and recommendations between the mining markers of BENCHMARKS.md.

Why K and not the deeper-FCDD positive ratios: the paper's protocol (Table 2) trains on all N normal
images plus round(N / 2^j) anomalies, 1/1 ... 1/128, and "unsupervised" (one anomaly). Our fixed splits
have N = 571 (Magnetic Tile) and 905 (ELPV) normal training images but reserve only 80 labelled
anomalies for training; the rest are val/test. The large ratios (1/1-1/4 on Magnetic Tile, 1/1-1/8 on
ELPV) would need more anomalies than that and could only take them from val/test, which would change
the evaluation set between points. So the default sweeps K = 1, 2, 5, 10, 20, 40, 80 labelled anomalies:
log-spaced, the whole reachable range (the ratios 1/128 ... 1/8 fall inside it), read with the same
per-doubling rule; the table's "positive ratio" column gives K/N. `--ratios` runs the reachable ratios
instead.

    .venv/bin/python benchmarks/mining_sweep.py                                  # full: both sets, 3 seeds
    .venv/bin/python benchmarks/mining_sweep.py --datasets elpv --resume         # continue an interrupted run
    .venv/bin/python benchmarks/mining_sweep.py --jobs 6 --resume                # a GPU box: (dataset, seed) side by side
    .venv/bin/python benchmarks/mining_sweep.py --datasets elpv --ks 1,10 --seeds 0 --epochs 1 --no-write  # smoke
    .venv/bin/python benchmarks/mining_sweep.py --from-results       # re-summarise the committed rows, no fit
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from _table import machine_description, machines_summary, replace_section, run_in_parallel, subprocess_env  # noqa: E402
# The FCDD benchmark's settings, so that its K = 80 row and this sweep's last point describe one model.
from fcdd_benchmark import DETECTOR_PARAMS, IMAGE_SIZE  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "mining"
KS = "1,2,5,10,20,40,80"
# Which machine and code fitted each (point, seed): rows of one sweep may come from several runs (a
# resumed CPU run, a GPU box), and the section names them all rather than only the machine that renders.
FITTED_ON = "fitted_on.json"


def _row_keys(folder: Path) -> set[str]:
    rows = folder / "sweep_rows.csv"
    if not rows.is_file():
        return set()
    with rows.open(newline="") as handle:
        return {f"{row['point']}|{row['seed']}" for row in csv.DictReader(handle)}


def recording_machine(folder: Path, sweep, *, resume: bool):
    """Run `sweep()` (which fits into `folder`, keeping its finished rows if `resume`), note this machine
    beside each row it fitted, and return what `sweep()` returns."""
    record = folder / FITTED_ON
    if not resume:
        record.unlink(missing_ok=True)
    before = _row_keys(folder) if resume else set()
    machine = machine_description()  # as the fits start: a commit made while they run did not fit them
    result = sweep()
    added = _row_keys(folder) - before
    if added:
        known = json.loads(record.read_text()) if record.is_file() else {}
        record.write_text(json.dumps({**known, **dict.fromkeys(sorted(added), machine)}, indent=1))
    return result


def fitted_on(out_dir: Path, rows: list[dict]) -> str:
    """The machines (with code versions) that fitted `rows`, from the records in `out_dir` and its pieces."""
    known = {}
    for record in [*sorted(out_dir.glob(f"seed*/{FITTED_ON}")), out_dir / FITTED_ON]:
        if record.is_file():
            known.update(json.loads(record.read_text()))
    machines = [known.get(f"{row['point']}|{row['seed']}", "not recorded") for row in rows]
    return machines_summary(machines)


def ratio_reach(data: str) -> dict:
    """Normal training images, reserved anomalies and which positive ratios the fixed split can reach."""
    from defectmine.data.splits import POSITIVE_RATIOS, parse_ratio
    from defectmine.pipeline import RunConfig, load_records, split_records

    split = split_records(load_records(data), RunConfig(data=data))
    n_normal, pool = len(split.normal_train), len(split.train_anomalous)
    needed = {}
    for ratio in POSITIVE_RATIOS:
        value = parse_ratio(ratio)
        # the protocol's count (positive_ratio_subset): round half up, at least one anomaly
        needed[ratio] = 1 if value is None else max(1, math.floor(n_normal * value + 0.5))
    return {"n_normal": n_normal, "pool": pool, "needed": needed,
            "reachable": [r for r, n in needed.items() if n <= pool]}


def why_k(reach: dict[str, dict]) -> str:
    parts = []
    for data, r in reach.items():
        out = [f"{ratio} ({n})" for ratio, n in r["needed"].items() if n > r["pool"]]
        parts.append(f"{data}: N = {r['n_normal']} normal training images, {r['pool']} reserved anomalies; "
                     f"out of reach: {', '.join(out) or 'none'}")
    return (
        "Why K and not the positive ratios: the deeper-FCDD protocol adds round(N·ratio) anomalies to the N normal "
        "training images, but the fixed splits reserve only 80 labelled anomalies for training (the others are "
        "val/test); the large ratios (anomalies needed in brackets) could only be reached by taking test images, "
        "which would change the evaluation set. " + "; ".join(parts) + ". The sweep therefore runs K = 1, 2, 5, "
        "10, 20, 40, 80 labelled anomalies (log-spaced; the reachable ratios 1/128 ... lie inside this range) and "
        "reads the phases per doubling of K; 'positive ratio' gives K/N."
    )


def section(results: dict, reach: dict, args, command: str) -> str:
    from defectmine.report.sweep import markdown_table

    params = {**DETECTOR_PARAMS, "epochs": args.epochs, **args.params}
    lines = [
        f"Command: `{command}`  ",
        f"Date: {time.strftime('%Y-%m-%d')}; machine: {machine_description()}  ",
        f"Settings: FCDD, backbone `cnn` (from scratch, no pretrained weights), {args.image_size}x{args.image_size} "
        f"grayscale, {params['epochs']} epochs, width {params['width']}"
        + (f", options {json.dumps(args.params)}" if args.params else "") + "; threshold max-F1 on val; metrics on test; "
        f"mean ± std over seeds {args.seeds}; phase rule: over-mining starts at the first point after which every "
        f"gain of the running-best validation AUROC per doubling of anomalies stays below {args.tolerance:g} "
        "(`defectmine.evaluation.sweep.mining_phases`; the advice is a decision, so it is read on val, and "
        "test AUROC is shown beside it)"
        + (f"; {args.jobs} sweeps ran side by side, so fit s is measured under that load." if args.jobs > 1 else "."),
        "",
    ]
    if args.ratios is None:
        lines += [why_k(reach), ""]
    for data, result in results.items():
        lines += [f"### {data}", "", f"Rows fitted on: {fitted_on(_out_dir(data), result.rows)}.", "",
                  markdown_table(result.summary), "",
                  f"**Recommendation:** {result.recommendation}", ""]
        if result.phases and result.phases["gain_per_doubling"]:
            xs, gains = result.phases["n_anomalies"], result.phases["gain_per_doubling"]
            steps = ", ".join(f"{a}→{b}: {g:+.3f}" for a, b, g in zip(xs, xs[1:], gains, strict=False))
            lines += [f"Validation AUROC gain per doubling (running best): {steps}", ""]
        if not args.no_write and "plot" in result.files:
            lines += [f"![mining curve, {data}](benchmarks/results/mining/{_slug(data)}.png)", ""]
    return "\n".join(lines).rstrip()


def _slug(data: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in Path(data).name or data)


def run_pieces(args, seeds: list[int]) -> None:
    """--jobs: each (dataset, seed, point) sweeps in its own subprocess, up to --jobs at a time, into
    runs/bench/mining-<dataset>/seed<S>-<point>/; their rows are then merged into the dataset's sweep
    folder. One point per piece, not one seed: a seed's points would otherwise fit one after another,
    and a GPU box with many cores would sit on 3 pieces (the seeds) for the length of the sweep. Every
    point's labelled anomalies depend on that point and seed alone (`training_anomalies`), and pieces
    share no files, so the rows are the ones a single sweep makes."""
    from defectmine.pipeline import merge_sweep_rows

    options = ["--epochs", str(args.epochs), "--params", json.dumps(args.params), "--image-size", str(args.image_size), "--tolerance", str(args.tolerance),
               "--device", args.device]
    points = (args.ratios or args.ks).split(",")
    pieces = [(data, seed, point) for data in args.datasets for seed in seeds for point in points]
    if not args.resume:  # as without --jobs: start afresh
        for data in args.datasets:
            shutil.rmtree(_out_dir(data), ignore_errors=True)

    def piece(job: tuple[str, int, str]) -> None:
        data, seed, point = job
        started = time.time()
        proc = subprocess.run([sys.executable, __file__, "--piece", data, str(seed), *options,
                               "--ratios" if args.ratios else "--ks", point],
                              capture_output=True, text=True, env=subprocess_env(args.jobs))
        if proc.returncode:
            sys.exit(f"{data} seed {seed} point {point} failed:\n{proc.stderr[-3000:]}")
        print(f"{data} seed {seed} point {point}: fitted ({time.time() - started:.0f} s)", flush=True)

    run_in_parallel(piece, pieces, args.jobs)
    for data in args.datasets:
        out = _out_dir(data)
        # the per-seed folders of earlier runs too (a piece without rows is skipped)
        parts = [out / f"seed{seed}" for seed in seeds] + [_piece_dir(data, seed, point) for _, seed, point in pieces]
        merge_sweep_rows(parts, out)


def _piece_dir(data: str, seed: int, point: str) -> Path:
    return _out_dir(data) / f"seed{seed}-{point.replace('/', 'in')}"  # 1/4 -> seed0-1in4


def restore_rows(data: str) -> None:
    """--from-results: put the committed rows of `data` (benchmarks/results/mining/<data>.json) back as the
    sweep's rows, with the machine and code that fitted them, so that a resumed sweep re-summarises them
    (e.g. after a change of the phase rule) without fitting anything."""
    committed = RESULTS / f"{_slug(data)}.json"
    if not committed.is_file():
        sys.exit(f"mining_sweep.py: {committed} not found; run the sweep itself first.")
    document = json.loads(committed.read_text())
    out = _out_dir(data)
    out.mkdir(parents=True, exist_ok=True)
    from defectmine.report.files import write_scores_csv

    write_scores_csv(out / "sweep_rows.csv", document["rows"])
    machines = document.get("fitted_on") or _machines_from_section(data)
    if machines:
        (out / FITTED_ON).write_text(json.dumps(machines, indent=1))


def _machines_from_section(data: str) -> dict:
    """Rows committed before the results JSON carried their machines: the one machine and code that the
    BENCHMARKS.md section being re-rendered names for `data` ("Rows fitted on: M (code C).")."""
    import re

    text = (REPO / "BENCHMARKS.md").read_text()
    found = re.search(rf"### {re.escape(data)}\n\nRows fitted on: (.+) \(code (\w+)\)\.\n", text)
    if not found:
        return {}
    machine = f"{found.group(1)}, code {found.group(2)}"
    rows = json.loads((RESULTS / f"{_slug(data)}.json").read_text())["rows"]
    return {f"{row['point']}|{row['seed']}": machine for row in rows}


def _out_dir(data: str) -> Path:
    return REPO / "runs" / "bench" / f"mining-{_slug(data)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["magnetic_tile", "elpv"],
                        help="Built-in sets or data folders (a folder is handy for a smoke test).")
    parser.add_argument("--ks", default=KS, help=f"Numbers of labelled anomalies (default {KS}).")
    parser.add_argument("--ratios", default=None, help="Instead of --ks: positive ratios, e.g. 1/16,1/32,1/64,1/128,unsupervised.")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=DETECTOR_PARAMS["epochs"])
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--resume", action="store_true", help="Keep finished fits of an interrupted run.")
    parser.add_argument("--jobs", type=int, default=1,
                        help="Sweep every (dataset, seed, point) in its own subprocess, this many side by side (a GPU box).")
    parser.add_argument("--piece", nargs=2, metavar=("DATASET", "SEED"), help=argparse.SUPPRESS)  # one point: --ratios/--ks
    parser.add_argument("--from-results", action="store_true",
                        help="Re-summarise the rows committed in benchmarks/results/mining/ (no fit; implies --resume).")
    parser.add_argument("--params", type=json.loads, default={},
                        help='FCDD options over the benchmark settings as JSON, e.g. a recipe from levers.py '
                             '--print-recipe: \'{"augment": "all"}\'.')
    parser.add_argument("--section", default="mining",
                        help="BENCHMARKS.md section (marker key) to write; another key keeps the main sweep's table.")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="Do not update BENCHMARKS.md or benchmarks/results/.")
    args = parser.parse_args()

    from defectmine.pipeline import run_sweep
    from defectmine.pipeline import RunConfig

    seeds = [int(s) for s in args.seeds.split(",")]
    ks = None if args.ratios else [int(k) for k in args.ks.split(",")]
    ratios = args.ratios.split(",") if args.ratios else None
    params = {**DETECTOR_PARAMS, "epochs": args.epochs, **args.params, "device": args.device}

    def base(data: str):
        return RunConfig(data=data, detector="fcdd", detector_params=dict(params), image_size=args.image_size)

    if args.piece:
        data, seed = args.piece[0], int(args.piece[1])
        out = _piece_dir(data, seed, args.ratios or args.ks)
        recording_machine(out, partial(run_sweep, base(data), ks=ks, ratios=ratios, seeds=[seed], out_dir=out,
                                       tolerance=args.tolerance, resume=True, quiet=True), resume=True)
        return
    if args.from_results:
        args.resume = True
        for data in args.datasets:
            restore_rows(data)
    if args.jobs > 1:
        run_pieces(args, seeds)
    reach = {data: ratio_reach(data) for data in args.datasets}
    results = {}
    for data in args.datasets:
        started = time.time()
        resume = args.resume or args.jobs > 1
        result = results[data] = recording_machine(_out_dir(data), partial(
            run_sweep, base(data), ks=ks, ratios=ratios, seeds=seeds, out_dir=_out_dir(data), tolerance=args.tolerance,
            resume=resume, quiet=args.quiet), resume=resume)
        print(f"{data}: {result.recommendation} ({time.time() - started:.0f} s; report {result.files['report']})",
              flush=True)
        if not args.no_write:
            RESULTS.mkdir(parents=True, exist_ok=True)
            document = json.loads(Path(result.files["json"]).read_text())
            record = _out_dir(data) / FITTED_ON
            document["fitted_on"] = json.loads(record.read_text()) if record.is_file() else {}
            (RESULTS / f"{_slug(data)}.json").write_text(json.dumps(document, indent=2))
            if "plot" in result.files:
                shutil.copyfile(result.files["plot"], RESULTS / f"{_slug(data)}.png")
    command = ("python benchmarks/mining_sweep.py " + " ".join(sys.argv[1:])).strip()
    text = section(results, reach, args, command)
    print(text)
    if not args.no_write:
        heading = "Damage-mining sweep: FCDD against the number of labelled anomalies"
        if args.section != "mining":
            heading += f" ({', '.join(args.datasets)})"
        replace_section(REPO / "BENCHMARKS.md", args.section, heading, text)


if __name__ == "__main__":
    from defectmine.errors import DefectmineError

    try:
        main()
    except DefectmineError as error:  # bad data or options: the message says what to fix, no traceback
        sys.exit(f"mining_sweep.py: {error}")
