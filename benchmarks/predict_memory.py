"""Peak memory of `defectmine predict` against the number of images: it should stay flat.

Writes N synthetic 128x128 grayscale PNGs (default 1,000 / 10,000 / 50,000; written once under
runs/bench/predict_memory/, never committed), fits a tiny FCDD once (1 epoch, width 8, 128 px), then
for each N runs `defectmine predict` (overlays on, the default) in a fresh subprocess and reads its
peak RSS (wait4's ru_maxrss of that one child). Side by side, the approach predict used before
streaming: decode every image into an ImageDataset, then `detector.score(dataset)` of the whole set
(no overlays), and streaming predict with --no-overlays for a like-for-like time. A baseline size whose projected peak (a line through the smaller sizes) exceeds --baseline-max-gb is
not run and is reported as skipped, with the projection.

Writes benchmarks/results/predict_memory/summary.json ({"peak_rss_mb": {"1000": ..., ...}}, streaming
predict), rows.json beside it (every row, the baseline included, with seconds and images/s) and the
predict-memory section of BENCHMARKS.md.

    .venv/bin/python benchmarks/predict_memory.py
    .venv/bin/python benchmarks/predict_memory.py --sizes 1000 5000 --no-write   # a quick look

The parent process imports neither torch nor defectmine: on Linux a child's ru_maxrss starts from its
parent's RSS at fork time, so a heavy parent would inflate every measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from _table import replace_section, subprocess_env  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "predict_memory"
WORK = REPO / "runs" / "bench" / "predict_memory"
IMAGE_SIZE = 128
PER_FOLDER = 1000  # images per pool folder; an N-image data folder links N / PER_FOLDER of them
FIT_PARAMS = {"epochs": 1, "width": 8, "batch_size": 32, "device": "cpu"}
FLAT_WITHIN = 0.10
STREAM, STREAM_BARE = "streaming predict", "streaming predict --no-overlays"
BASELINE, FLOOR = "decode all, then score", "imports only (floor)"


def _env() -> dict:
    env = subprocess_env(1)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _run_measured(args: list[str], env: dict) -> tuple[float, float, str]:
    """(peak RSS MB, wall seconds, stdout) of `python *args` in a fresh subprocess, reaped with wait4
    so that the peak is this child's alone (RUSAGE_CHILDREN would give the largest of all children)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, *args], env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode:
        sys.exit(f"{' '.join(args[:4])} failed:\n{stderr[-3000:]}")
    return usage.ru_maxrss / 1024, seconds, stdout


def write_pool(n_max: int) -> None:
    """n_max distinct textured PNGs in pool/cXX/ folders of PER_FOLDER (kept between runs); run in a
    subprocess (--write-pool) so that numpy and cv2 never weigh on this process."""
    import cv2
    import numpy as np

    pool = WORK / "pool"
    rng = np.random.default_rng(0)
    for folder_index in range(-(-n_max // PER_FOLDER)):
        folder = pool / f"c{folder_index:03d}"
        if folder.is_dir() and len(list(folder.glob("*.png"))) == PER_FOLDER:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(PER_FOLDER):
            coarse = rng.integers(60, 200, (8, 8), dtype=np.uint8)
            image = cv2.resize(coarse, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_CUBIC)
            image = cv2.add(image, rng.integers(0, 12, image.shape, dtype=np.uint8))
            cv2.imwrite(str(folder / f"im_{i:04d}.png"), image)


def data_folder(pool: Path, n: int) -> Path:
    """A folder of n images: symlinks to the first n / PER_FOLDER pool folders (predict follows them)."""
    folder = WORK / f"n{n}"
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {f"c{i:03d}" for i in range(n // PER_FOLDER)}
    for link in folder.iterdir():
        if link.name not in wanted:
            link.unlink()
    for name in sorted(wanted):
        if not (folder / name).exists():
            (folder / name).symlink_to(pool / name, target_is_directory=True)
    return folder


def fit_model(env: dict) -> Path:
    """A tiny fitted run (its metrics.json records the validation map range predict draws on)."""
    run = WORK / "run"
    if (run / "model" / "model.safetensors").is_file():
        return run / "model"
    code = (
        "from pathlib import Path\n"
        "from defectmine.data import write_synthetic_folder\n"
        "from defectmine.pipeline import RunConfig, fit_run\n"
        f"data = write_synthetic_folder(Path({str(WORK / 'fit_data')!r}), n_normal=40, n_anomalous=16, size={IMAGE_SIZE})\n"
        f"fit_run(RunConfig(data=str(data), detector='fcdd', image_size={IMAGE_SIZE}, channels=1, quiet=True, "
        f"detector_params={FIT_PARAMS!r}), Path({str(run)!r}), overwrite=True)\n"
    )
    _run_measured(["-c", code], env)
    return run / "model"


def streaming_row(model: Path, data: Path, n: int, env: dict, overlays: bool = True) -> dict:
    out = WORK / f"out{n}"
    cli = "import sys; from defectmine.cli import app; sys.argv = ['defectmine', *sys.argv[1:]]; app()"
    peak, seconds, _ = _run_measured(["-c", cli, "predict", "--model", str(model), "--data", str(data),
                                      "--out", str(out), "--overwrite", "--quiet",
                                      "--overlays" if overlays else "--no-overlays"], env)
    summary = json.loads((out / "predict.json").read_text())
    if summary["n_scored"] != n:
        sys.exit(f"predict scored {summary['n_scored']} of {n} images in {data}")
    return {"mode": STREAM if overlays else STREAM_BARE, "n": n, "peak_rss_mb": round(peak, 1),
            "seconds": round(seconds, 1), "images_per_second": round(n / seconds, 1),
            "overlays": len(list((out / "overlays").iterdir())) if overlays else 0, "load_average": _load()}


def baseline_row(model: Path, data: Path, n: int, env: dict) -> dict:
    peak, seconds, stdout = _run_measured([__file__, "--baseline-one", str(model), str(data)], env)
    scored = json.loads(stdout.strip().splitlines()[-1])["n"]
    return {"mode": BASELINE, "n": n, "peak_rss_mb": round(peak, 1), "seconds": round(seconds, 1),
            "images_per_second": round(scored / seconds, 1), "load_average": _load()}


def _load() -> float:
    # Other work on the machine slows every timing down; the 1-minute load as each command ends.
    return round(os.getloadavg()[0], 2)


def baseline_one(model: str, data: str) -> None:
    """In a subprocess: what predict did before streaming (ImageDataset of all, one score call)."""
    from defectmine.data import ImageDataset, Record
    from defectmine.models.registry import load_detector
    from defectmine.pipeline.predict_inputs import list_inputs

    detector = load_detector(Path(model))
    records = [Record(path=Path(item.path), label="normal") for item in list_inputs(data).items]
    scores = detector.score(ImageDataset(records, detector.spec_, quiet=True))
    print(json.dumps({"n": len(scores.image)}))


def imports_row(env: dict) -> dict:
    code = "import torch, defectmine.cli, defectmine.pipeline.predict, defectmine.models.registry"
    peak, seconds, _ = _run_measured(["-c", code], env)
    return {"mode": FLOOR, "n": 0, "peak_rss_mb": round(peak, 1), "seconds": round(seconds, 1)}


def projected_mb(rows: list[dict], n: int) -> float | None:
    """Peak RSS at n on the line through the two largest measured sizes (None with fewer than two)."""
    done = sorted((r["n"], r["peak_rss_mb"]) for r in rows)
    if len(done) < 2:
        return None
    (n0, m0), (n1, m1) = done[-2], done[-1]
    return m1 + (m1 - m0) / (n1 - n0) * (n - n1)


def machine() -> str:
    # In a subprocess: machine_description() imports torch, which would weigh on later children.
    code = "import sys; sys.path.insert(0, 'benchmarks'); import _table; print(_table.machine_description())"
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(), capture_output=True, text=True,
                          check=True).stdout.strip()


def table(rows: list[dict], skipped: list[dict], command: str, description: str) -> str:
    by_mode: dict[str, dict[int, dict]] = {}
    for row in rows:
        by_mode.setdefault(row["mode"], {})[row["n"]] = row
    stream = [by_mode[STREAM][n] for n in sorted(by_mode.get(STREAM, {}))]
    floor = by_mode.get(FLOOR, {}).get(0, {}).get("peak_rss_mb")
    lines = [
        f"Command: `{command}`  ",
        f"Date: {time.strftime('%Y-%m-%d')}; machine: {description}  ",
        f"Settings: synthetic {IMAGE_SIZE}x{IMAGE_SIZE} grayscale PNGs; FCDD, backbone `cnn`, width "
        f"{FIT_PARAMS['width']}, fitted {FIT_PARAMS['epochs']} epoch on a small synthetic set (the model's size "
        "does not matter here, only how memory grows); CPU, batch 64 (the model's score_batch_size), no "
        "decoding workers; overlays on (the default). Peak RSS of each command in a fresh process (wait4 "
        "ru_maxrss)." + (f" Python with torch and defectmine imported and nothing run: {floor:.0f} MB." if floor else "")
        + " \"Before\" is what predict did until streaming (decode every image into an ImageDataset, then one "
        "`detector.score` of the whole set), without its overlays; \"no overlays\" is streaming predict with "
        "--no-overlays, the like-for-like time. Load: the machine's 1-minute load average as each command ended "
        "(2 cores, shared).",
        "",
        "| images | predict: peak RSS MB | s | images/s | load | no overlays: peak RSS MB | s | before: peak RSS MB | s | images/s | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    skipped_n = {s["n"]: s for s in skipped}
    for r in stream:
        bare, b = by_mode.get(STREAM_BARE, {}).get(r["n"]), by_mode.get(BASELINE, {}).get(r["n"])
        bare_cells = f"{bare['peak_rss_mb']:.0f} | {bare['seconds']:.0f}" if bare else "- | -"
        if b:
            before = f"{b['peak_rss_mb']:.0f} | {b['seconds']:.0f} | {b['images_per_second']:.0f} | {b['load_average']:.1f}"
        elif r["n"] in skipped_n:
            before = f"not run: projected {skipped_n[r['n']]['projected_mb']:.0f} | - | - | -"
        else:
            before = "- | - | - | -"
        lines.append(f"| {r['n']:,} | {r['peak_rss_mb']:.0f} | {r['seconds']:.0f} | {r['images_per_second']:.0f} | "
                     f"{r['load_average']:.1f} | {bare_cells} | {before} |")
    if len(stream) >= 2:
        peaks = [r["peak_rss_mb"] for r in stream]
        spread = max(peaks) / min(peaks) - 1
        verdict = "within" if spread <= FLAT_WITHIN else "NOT within"
        lines += ["", f"Streaming predict, {stream[0]['n']:,} to {stream[-1]['n']:,} images: the largest peak RSS is "
                      f"{spread:.1%} ({max(peaks) - min(peaks):.0f} MB) above the smallest, {verdict} the "
                      f"{FLAT_WITHIN:.0%} target."]
    done = [by_mode[BASELINE][n] for n in sorted(by_mode.get(BASELINE, {}))]
    if len(done) >= 2:
        slope = (done[-1]["peak_rss_mb"] - done[0]["peak_rss_mb"]) / (done[-1]["n"] - done[0]["n"])
        not_run = ", ".join(f"{row['n']:,}" for row in skipped)
        lines.append(f"Before streaming, peak RSS grew by {slope:.2f} MB per image ({done[0]['n']:,} to "
                     f"{done[-1]['n']:,} images)" + (f"; {not_run} images: not run, the projected peak is above "
                                                     "--baseline-max-gb." if skipped else "."))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[1000, 10000, 50000])
    parser.add_argument("--baseline-sizes", nargs="*", type=int, default=None,
                        help="Sizes to run the decode-all baseline at (default: --sizes).")
    parser.add_argument("--baseline-max-gb", type=float, default=8.0,
                        help="Skip a baseline size whose projected peak RSS is above this.")
    parser.add_argument("--baseline-one", nargs=2, metavar=("MODEL", "DATA"), help=argparse.SUPPRESS)
    parser.add_argument("--write-pool", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="Do not update results/ and BENCHMARKS.md.")
    args = parser.parse_args()
    if args.baseline_one:
        baseline_one(*args.baseline_one)
        return
    if args.write_pool:
        write_pool(args.write_pool)
        return
    if any(n % PER_FOLDER for n in args.sizes):
        sys.exit(f"--sizes must be multiples of {PER_FOLDER}")
    env = _env()
    _run_measured([__file__, "--write-pool", str(max(args.sizes))], env)
    pool = WORK / "pool"
    model = fit_model(env)
    rows, skipped = [imports_row(env)], []
    baseline_sizes = set(args.sizes if args.baseline_sizes is None else args.baseline_sizes)
    for n in sorted(args.sizes):  # each size's commands one after the other: under about the same load
        data = data_folder(pool, n)
        measured = [streaming_row(model, data, n, env)]
        if n in baseline_sizes:
            projected = projected_mb([r for r in rows if r["mode"] == BASELINE], n)
            if projected is not None and projected > 1024 * args.baseline_max_gb:
                skipped.append({"mode": BASELINE, "n": n, "skipped": True, "projected_mb": round(projected)})
            else:
                measured += [streaming_row(model, data, n, env, overlays=False), baseline_row(model, data, n, env)]
        rows += measured
        for row in measured + [s for s in skipped if s["n"] == n]:
            print(json.dumps(row), flush=True)
    description = machine()
    date = time.strftime("%Y-%m-%d")
    for row in rows + skipped:
        row.update(machine=description, date=date)
    command = ("python benchmarks/predict_memory.py " + " ".join(sys.argv[1:])).strip()
    text = table(rows, skipped, command, description)
    print(text)
    if args.no_write:
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    stream = {str(r["n"]): r["peak_rss_mb"] for r in rows if r["mode"] == STREAM}
    (RESULTS / "summary.json").write_text(json.dumps({"peak_rss_mb": stream}, indent=2) + "\n")
    (RESULTS / "rows.json").write_text(json.dumps(rows + skipped, indent=2) + "\n")
    replace_section(REPO / "BENCHMARKS.md", "predict-memory", "Predict: peak memory against the number of images", text)


if __name__ == "__main__":
    main()
