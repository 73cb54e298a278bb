"""Ray: images/s of `predict` against the number of Ray workers on this machine, beside one process.

Fits a tiny FCDD once (1 epoch, width 8, 128 px) on a synthetic folder, writes --images synthetic
128x128 PNGs to score (kept under runs/bench/ship_ray/, never committed), then scores them with
overlays (predict's default):

- in one process (`predict_folder`, torch on 1 thread);
- with `predict_folder_ray` on a local Ray of W CPUs for each W of --workers (one task per CPU, one
  torch thread each). Each W is timed twice: the first call includes starting the worker processes
  (imports of torch and defectmine), the second finds them running. `ray.init` is timed apart.

- through the service: `defectmine serve RUN` in a subprocess (127.0.0.1, micro-batches of 16), the
  same images posted 16 per multipart request from 2 clients (benchmarks/ship_serve.py's load loop),
  when `defectmine.serve` exists (reported as absent otherwise).

Every Ray run's scores.csv is compared byte for byte with the one-process scores.csv of the same run:
`ray_scores_identical` in benchmarks/results/ship/summary.json (shared with the other `ship` scripts)
is true only when all are.

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/ship_ray.py
    .venv/bin/python benchmarks/ship_ray.py --images 100 --no-write   # a quick look

Writes benchmarks/results/ship_ray/rows.json, the keys ray_scores_identical and
ray_images_per_second of benchmarks/results/ship/summary.json, and the ship-ray section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "src"))
from _table import machine_description, replace_section, update_summary  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "ship_ray"
SHIP = REPO / "benchmarks" / "results" / "ship"
WORK = REPO / "runs" / "bench" / "ship_ray"
IMAGE_SIZE = 128
FIT_PARAMS = {"epochs": 1, "width": 8, "batch_size": 32, "device": "cpu"}


def prepare(n_images: int) -> tuple[Path, Path]:
    """(model folder, folder of images to score), both kept between runs of the same size."""
    from defectmine.data import write_synthetic_folder
    from defectmine.pipeline import RunConfig, fit_run

    images = WORK / f"images_{n_images}"
    if not (images / "normal").is_dir() or len(os.listdir(images / "normal")) != n_images - n_images // 10:
        write_synthetic_folder(images, n_normal=n_images - n_images // 10, n_anomalous=n_images // 10,
                               size=IMAGE_SIZE, seed=1)
    run = WORK / "run"
    if not (run / "model").is_dir():
        train = write_synthetic_folder(WORK / "train", n_normal=60, n_anomalous=12, size=IMAGE_SIZE, seed=0)
        config = RunConfig(data=str(train), detector="fcdd", image_size=IMAGE_SIZE, quiet=True,
                           detector_params=dict(FIT_PARAMS))
        fit_run(config, run, overwrite=True)
    return run / "model", images


def timed(function, *args, **kwargs) -> tuple[object, float]:
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def service_row(run_dir: Path, images: Path, n_images: int, per_request: int = 16) -> dict:
    """images/s of the `images` PNGs posted `per_request` at a time from 2 clients to `defectmine serve
    run_dir` (a subprocess), after a warm-up; the load loop of benchmarks/ship_serve.py."""
    import asyncio
    import math
    import subprocess
    from types import SimpleNamespace

    import httpx
    import ship_serve

    pngs = [path.read_bytes() for path in sorted(images.rglob("*.png"))]
    port = ship_serve._free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", "from defectmine.cli import app; app()", "serve", str(run_dir), "--host", ship_serve.HOST,
         "--port", str(port), "--max-batch", str(per_request), "--review-dir", str(WORK / "review"),
         "--log-level", "warning"], env=os.environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    async def measure() -> dict:
        async with httpx.AsyncClient(base_url=f"http://{ship_serve.HOST}:{port}", timeout=120.0) as client:
            await ship_serve._wait_until_up(client, server)
            many = lambda k: client.post("/score", files=[  # noqa: E731
                ("files", (f"{k}_{j}.png", pngs[(k * per_request + j) % len(pngs)], "image/png"))
                for j in range(per_request)])
            (await many(0)).raise_for_status()  # warm-up
            limits = SimpleNamespace(requests=math.ceil(n_images / per_request), seconds=600.0)
            return await ship_serve._level(client, many, 2, per_request, limits)

    try:
        level = asyncio.run(measure())
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {"mode": "service", "workers": 1, "call": "second", "images": level["requests"] * per_request,
            "seconds": level["seconds"], "images_per_second": level["images_per_s"], "failed": level["failed"]}


def same_outputs(a: Path, b: Path) -> tuple[bool, bool]:
    """(scores.csv identical, every overlay identical) of two predict output folders."""
    scores = (a / "scores.csv").read_bytes() == (b / "scores.csv").read_bytes()
    names = sorted(os.listdir(a / "overlays"))
    overlays = names == sorted(os.listdir(b / "overlays")) and all(
        (a / "overlays" / n).read_bytes() == (b / "overlays" / n).read_bytes() for n in names)
    return scores, overlays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=400, help="Images to score.")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray CPUs (= workers) to try.")
    parser.add_argument("--no-write", action="store_true", help="Do not update results/ and BENCHMARKS.md.")
    args = parser.parse_args()

    import ray
    import torch

    from defectmine.distributed import predict_folder_ray
    from defectmine.pipeline import predict_folder

    torch.set_num_threads(1)
    # the Ray workers this script starts import this checkout's defectmine, as the script itself does
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)
    load_before = os.getloadavg()
    model, images = prepare(args.images)
    out = WORK / "out"
    rows = []
    for call in ("first", "second"):  # the first call also loads the model and warms torch up
        one, seconds = timed(predict_folder, model, str(images), out / "one", overwrite=True, quiet=True)
        rows.append({"mode": "one process", "workers": 1, "call": call, "images": one.n_scored, "seconds": seconds,
                     "images_per_second": one.n_scored / seconds})
        print(json.dumps(rows[-1]), flush=True)
    for workers in args.workers:
        _, init_seconds = timed(ray.init, num_cpus=workers, include_dashboard=False, logging_level=logging.WARNING)
        for call in ("first", "second"):
            folder = out / f"ray{workers}_{call}"
            summary, seconds = timed(predict_folder_ray, model, str(images), folder, overwrite=True, quiet=True)
            scores_same, overlays_same = same_outputs(out / "one", folder)
            rows.append({"mode": "Ray", "workers": workers, "call": call, "images": summary.n_scored,
                         "seconds": seconds, "images_per_second": summary.n_scored / seconds,
                         "ray_init_seconds": init_seconds, "scores_identical": scores_same,
                         "overlays_identical": overlays_same})
            print(json.dumps(rows[-1]), flush=True)
        ray.shutdown()
    serve = importlib.util.find_spec("defectmine.serve") is not None
    if serve:
        rows.append(service_row(model.parent, images, args.images))
        print(json.dumps(rows[-1]), flush=True)
    load_after = os.getloadavg()

    identical = all(r["scores_identical"] for r in rows if r["mode"] == "Ray")
    description = machine_description()
    command = ("OMP_NUM_THREADS=1 nice -n 5 python benchmarks/ship_ray.py " + " ".join(sys.argv[1:])).strip()
    text = table(rows, command, description, serve, identical, (load_before, load_after))
    print(text)
    if args.no_write:
        return
    date = time.strftime("%Y-%m-%d")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "rows.json").write_text(json.dumps([{**r, "machine": description, "date": date} for r in rows],
                                                  indent=2) + "\n")
    names = {"one process": lambda r: "one_process", "service": lambda r: "service",
             "Ray": lambda r: f"ray_{r['workers']}_workers"}
    speeds = {names[r["mode"]](r): r["images_per_second"] for r in rows if r["call"] == "second"}
    update_summary(SHIP, {"ray_scores_identical": identical, "ray_images_per_second": speeds})
    replace_section(REPO / "BENCHMARKS.md", "ship-ray", "Ray: predict images/s against the number of workers", text)


def table(rows: list[dict], command: str, description: str, serve: bool, identical: bool, loads) -> str:
    lines = [
        f"Command: `{command}` ({time.strftime('%Y-%m-%d')}; {description}).",
        "",
        f"`defectmine predict` of {rows[0]['images']} synthetic {IMAGE_SIZE}x{IMAGE_SIZE} PNGs with overlays, tiny FCDD "
        f"(width 8, 1 epoch); one process against `predict --ray` on a local Ray of W CPUs (one task per CPU, "
        "one torch thread each). *first* call: the model is loaded and torch warms up (with Ray: the workers start and "
        "import torch); *second*: the same again, everything running already.",
        "",
        "| mode | workers | call | images/s | seconds | ray.init s | scores.csv identical | overlays identical |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ray_init = f"{r['ray_init_seconds']:.1f}" if "ray_init_seconds" in r else "-"
        same = [("yes" if r[k] else "**no**") if k in r else "-" for k in ("scores_identical", "overlays_identical")]
        lines.append(f"| {r['mode']} | {r['workers']} | {r['call']} | {r['images_per_second']:.1f} | "
                     f"{r['seconds']:.1f} | {ray_init} | {same[0]} | {same[1]} |")
    one = next(r["images_per_second"] for r in rows if r["mode"] == "one process" and r["call"] == "second")
    warm = {r["workers"]: r["images_per_second"] for r in rows if r["mode"] == "Ray" and r["call"] == "second"}
    lines += [
        "",
        "Reading: " + "; ".join(f"{w} worker(s) {v / one:.2f}x one process" for w, v in sorted(warm.items()))
        + "".join(f"; the service {r['images_per_second'] / one:.2f}x" for r in rows if r["mode"] == "service")
        + " (second calls). `ray_scores_identical` = " + ("true" if identical else "**false**")
        + ": every Ray scores.csv " + ("equals" if identical else "does not equal")
        + " the one-process scores.csv byte for byte.",
        ("The service row: `defectmine serve` (one process, micro-batches of 16), the same PNGs posted 16 per "
         "request from 2 clients over 127.0.0.1, client and server on this machine; its scores are not compared "
         "(the service answers JSON, not scores.csv)." if serve else
         "The service row is absent: `defectmine.serve` does not exist in this checkout."),
        f"Load average (1 min) {loads[0][0]:.1f} before and {loads[1][0]:.1f} after the runs on this "
        f"{os.cpu_count()}-core machine, shared with other jobs: the timings are upper bounds, and the ratio "
        "between one process and Ray says little about a machine of free cores.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
