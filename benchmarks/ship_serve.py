"""Load benchmark of `defectmine serve`: requests/s and p50 / p99 latency at 1, 8 and 32 concurrent clients,
and images/s through the service with several images per request.

Fits a tiny FCDD run once (synthetic 128 px grayscale images, 1 epoch, width 8; under
runs/bench/ship_serve/, never committed), starts `defectmine serve RUN` in a subprocess listening on
127.0.0.1 only (a free port), and drives it with httpx from this process. Every request posts one
128 x 128 PNG (raw body); the images/s row posts `--images-per-request` images per multipart request.
Each load level is bounded twice: at most --requests requests and at most --seconds seconds, after a
few warm-up requests. The server's batching statistics (GET /health) give the mean batch size per level.

Writes benchmarks/results/ship/serve.json (every row), merges serve_rps_8_clients (and the other
serve_* keys) into benchmarks/results/ship/summary.json, and the ship-serve section of BENCHMARKS.md.

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/ship_serve.py
    .venv/bin/python benchmarks/ship_serve.py --requests 50 --seconds 5 --no-write   # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from _table import machine_description, replace_section, subprocess_env, update_summary  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "ship"
WORK = REPO / "runs" / "bench" / "ship_serve"
HOST = "127.0.0.1"  # the benchmark never talks to another machine
CLIENTS = (1, 8, 32)
IMAGE_SIZE = 128


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="most requests per load level")
    parser.add_argument("--seconds", type=float, default=30.0, help="most seconds per load level")
    parser.add_argument("--images-per-request", type=int, default=16)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--no-write", action="store_true", help="print the rows; write nothing")
    args = parser.parse_args()
    env = {**subprocess_env(1), "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    run_dir = _fitted_run(env)
    images = _pngs(64)
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", "from defectmine.cli import app; app()", "serve", str(run_dir), "--host", HOST,
         "--port", str(port), "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms),
         "--review-dir", str(WORK / "review"), "--review-max", "200", "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        rows = asyncio.run(_measure(f"http://{HOST}:{port}", images, args, server))
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    for row in rows:
        print(json.dumps(row))
    if not args.no_write:
        _write(rows, args)


def _fitted_run(env: dict) -> Path:
    run_dir = WORK / "run"
    if (run_dir / "metrics.json").is_file():
        return run_dir
    data = WORK / "data"
    subprocess.run([sys.executable, "-c", "import sys; from defectmine.data import write_synthetic_folder; "
                    f"write_synthetic_folder(sys.argv[1], n_normal=48, n_anomalous=16, size={IMAGE_SIZE})", str(data)],
                   env=env, check=True)
    subprocess.run([sys.executable, "-c", "from defectmine.cli import app; app()", "fit", "--data", str(data),
                    "--out", str(run_dir), "--image-size", str(IMAGE_SIZE), "--epochs", "1", "-p", "width=8",
                    "--device", "cpu", "--overwrite", "--quiet"], env=env, check=True)
    return run_dir


def _pngs(n: int) -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(40, 215, (IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


async def _measure(url: str, images: list[bytes], args, server: subprocess.Popen) -> list[dict]:
    import httpx

    limits = httpx.Limits(max_connections=max(CLIENTS), max_keepalive_connections=max(CLIENTS))
    async with httpx.AsyncClient(base_url=url, timeout=60.0, limits=limits) as client:
        await _wait_until_up(client, server)
        one = lambda k: client.post("/score", content=images[k % len(images)],  # noqa: E731
                                    headers={"content-type": "image/png"})
        for k in range(5):  # warm-up: first calls allocate and load code
            (await one(k)).raise_for_status()
        rows = [await _level(client, one, clients, 1, args) for clients in CLIENTS]
        per = args.images_per_request
        many = lambda k: client.post("/score", files=[  # noqa: E731
            ("files", (f"{k}_{j}.png", images[(k * per + j) % len(images)], "image/png")) for j in range(per)])
        rows.append(await _level(client, many, 2, per, args))
    return rows


async def _wait_until_up(client, server: subprocess.Popen, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"defectmine serve exited with {server.returncode}:\n{server.stderr.read()[-3000:]}")
        try:
            if (await client.get("/health")).status_code == 200:
                return
        except Exception:  # httpx.TransportError while the server starts
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"defectmine serve did not answer /health within {seconds:.0f} s")


async def _level(client, send, clients: int, images_per_request: int, args) -> dict:
    """`clients` loops sending requests back to back until --requests are sent or --seconds have passed."""
    before = (await client.get("/health")).json()["batching"]
    latencies, failures, sent = [], 0, 0
    started = time.perf_counter()
    stop_at = started + args.seconds

    async def loop() -> None:
        nonlocal sent, failures
        while sent < args.requests and time.perf_counter() < stop_at:
            k = sent
            sent += 1
            t0 = time.perf_counter()
            answer = await send(k)
            latencies.append(time.perf_counter() - t0)
            failures += answer.status_code != 200

    await asyncio.gather(*(loop() for _ in range(clients)))
    seconds = time.perf_counter() - started
    after = (await client.get("/health")).json()["batching"]
    batches, scored = after["batches"] - before["batches"], after["images"] - before["images"]
    ms = 1000 * np.asarray(latencies)
    return {"clients": clients, "images_per_request": images_per_request, "requests": len(latencies),
            "failed": failures, "seconds": round(seconds, 3), "requests_per_s": len(latencies) / seconds,
            "images_per_s": len(latencies) * images_per_request / seconds,
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_batch": scored / batches if batches else None}


def _write(rows: list[dict], args) -> None:
    machine = machine_description()
    RESULTS.mkdir(parents=True, exist_ok=True)
    command = (f"OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/ship_serve.py --requests {args.requests} "
               f"--seconds {args.seconds:g} --images-per-request {args.images_per_request} --max-batch "
               f"{args.max_batch} --max-wait-ms {args.max_wait_ms:g}")
    (RESULTS / "serve.json").write_text(json.dumps({"command": command, "machine": machine,
                                                    "date": date.today().isoformat(), "rows": rows}, indent=2) + "\n")
    by_clients = {row["clients"]: row for row in rows if row["images_per_request"] == 1}
    batched = next(row for row in rows if row["images_per_request"] > 1)
    update_summary(RESULTS, {
        "serve_rps_8_clients": round(by_clients[8]["requests_per_s"], 2),
        "serve_p50_ms_8_clients": round(by_clients[8]["p50_ms"], 2),
        "serve_p99_ms_8_clients": round(by_clients[8]["p99_ms"], 2),
        "serve_images_per_s": round(max(row["images_per_s"] for row in rows), 2),
        "serve_images_per_s_note": f"best of the rows in serve.json; {IMAGE_SIZE} px FCDD (width 8), CPU",
    })
    lines = ["| clients | images / request | requests | failed | requests/s | images/s | p50 ms | p99 ms | mean batch |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        mean_batch = f"{row['mean_batch']:.1f}" if row["mean_batch"] else "–"
        lines.append(f"| {row['clients']} | {row['images_per_request']} | {row['requests']} | {row['failed']} | "
                     f"{row['requests_per_s']:.1f} | {row['images_per_s']:.1f} | {row['p50_ms']:.1f} | "
                     f"{row['p99_ms']:.1f} | {mean_batch} |")
    body = (f"Command: `{command}`  \nDate: {date.today().isoformat()}  \nMachine: {machine}\n\n"
            f"`defectmine serve` on a tiny FCDD run ({IMAGE_SIZE} px grayscale, width 8, 1 epoch; the model's "
            f"quality is beside the point here), micro-batching at most {args.max_batch} images, "
            f"{args.max_wait_ms:g} ms wait. Every request posts one {IMAGE_SIZE} x {IMAGE_SIZE} PNG and gets its "
            "score, decision and review-queue entry (the overlay PNG is written to disk for every image); the last "
            f"row posts {args.images_per_request} images per multipart request from 2 clients. Each level stops "
            f"at {args.requests} requests or {args.seconds:g} s. Client (httpx, asyncio) and server run on the "
            "same machine over 127.0.0.1, so the client's own CPU time is inside these numbers.\n\n"
            + "\n".join(lines) + "\n\n"
            f"summary.json: serve_rps_8_clients {by_clients[8]['requests_per_s']:.1f}, images/s through the service "
            f"{max(row['images_per_s'] for row in rows):.1f} (the Ray part compares against this). "
            "This 2-core machine was shared with other jobs while the benchmark ran: the throughputs are lower "
            "bounds and the latencies upper bounds.")
    replace_section(REPO / "BENCHMARKS.md", "ship-serve", "Inspection service: requests/s and latency (issue 17)",
                    body)


if __name__ == "__main__":
    main()
