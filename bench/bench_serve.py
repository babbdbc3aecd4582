"""Serving latency and throughput: identify over HTTP under N concurrent clients vs in-process calls.

In one run:

  in-process  `Recognizer.identify` on one photo (decode excluded), called back to back in
              this process: the work itself, no HTTP (the baseline)
  batching    the model alone on 8 face crops: 8 calls of one crop vs one call of 8 (would
              batching concurrent requests pay on this CPU?)
  HTTP        `facescale serve`'s app under uvicorn in a child process on loopback, once per
              --max-batch setting (1: every request runs the model alone; 32: concurrent
              requests' faces go through the model together, `serving.batching`); for each
              N in --clients, N asyncio clients (httpx) each POST the photo to /v1/identify
              --requests times; latency p50/p99 per request and requests/s overall

Prints p50/p99 and throughput for each, and the ratios HTTP/in-process. The model is the real
Inception V3 of `build_model` at --image-size (default 96) with a --classes-way head; its
weights do not change the cost, so it is not trained. The photo is a real lfw-dev one
(250x250, one face).

Run:  .venv/bin/python bench/bench_serve.py [--clients 1 2 4 8] [--requests 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO.parent / "shared" / "data" / "lfw-dev" / "Tony_Blair" / "Tony_Blair_0042.jpg"


def build_model_dir(directory: Path, classes: int, image_size: int) -> None:
    """model.keras + labels.json of an untrained model, as training writes them."""
    import keras

    from facescale.training.model import build_model

    keras.utils.set_random_seed(0)
    build_model(classes, image_size).save(directory / "model.keras")
    labels = {str(i): {"name": f"Person {i}", "slug": f"person-{i}"} for i in range(classes)}
    doc = {"version_id": "bench", "num_classes": classes, "labels": labels}
    (directory / "labels.json").write_text(json.dumps(doc))


def load(directory: Path):
    from facescale.pipeline.faces import CropParams
    from facescale.serving.recognizer import Recognizer

    return Recognizer.from_dir(directory, CropParams(), model_id="bench")


def serve(directory: Path, port: int, max_batch: int) -> None:
    """Child process: the API over the model in ``directory`` on 127.0.0.1:``port``."""
    import uvicorn

    from facescale.config import ServingSettings
    from facescale.serving.api import create_app
    from facescale.serving.loading import ModelWatcher

    recognizer = load(directory)
    recognizer.batch_requests(max_batch)
    watcher = ModelWatcher(lambda ref: recognizer, lambda: "bench", 3600)
    watcher.refresh()
    app = create_app(ServingSettings(), watcher, start_watcher=False)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = np.sort(np.asarray(samples))
    return float(np.percentile(ordered, 50)), float(np.percentile(ordered, 99))


async def clients(url: str, data: bytes, n: int, requests: int) -> tuple[list[float], float]:
    latencies: list[float] = []

    async def one(client: httpx.AsyncClient) -> None:
        for _ in range(requests):
            start = time.perf_counter()
            response = await client.post(url, files={"image": ("p.jpg", data, "image/jpeg")})
            latencies.append(time.perf_counter() - start)
            response.raise_for_status()

    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(one(client) for _ in range(n)))
        wall = time.perf_counter() - start
    return latencies, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--requests", type=int, default=40, help="requests per client")
    parser.add_argument("--classes", type=int, default=650)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--max-batch", type=int, nargs="+", default=[1, 32],
                        help="server settings to compare (1: no batching of concurrent requests)")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # child-process mode
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.max_batch[0])
        return

    from facescale.serving.images import ImageLimits, load_image

    data = PHOTO.read_bytes()
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        directory = Path(tmp)
        build_model_dir(directory, args.classes, args.image_size)
        recognizer = load(directory)
        image = load_image(data, ImageLimits())
        for _ in range(3):  # warm-up: trace, caches
            recognizer.identify(image)
        times = []
        for _ in range(args.requests):
            start = time.perf_counter()
            recognizer.identify(image)
            times.append(time.perf_counter() - start)
        base_p50, base_p99 = percentiles(times)
        base_rate = len(times) / sum(times)
        print(f"in-process identify: p50 {1000 * base_p50:.1f} ms, p99 {1000 * base_p99:.1f} ms, "
              f"{base_rate:.1f} images/s")

        crop = recognizer.crop(image, recognizer.detect(image)[0])
        recognizer.predict([crop] * 8)
        singles, batched = [], []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(8):
                recognizer.predict([crop])
            singles.append(time.perf_counter() - start)
            start = time.perf_counter()
            recognizer.predict([crop] * 8)
            batched.append(time.perf_counter() - start)
        print(f"model on 8 crops: 8 calls of 1 {1000 * min(singles):.0f} ms, 1 call of 8 {1000 * min(batched):.0f} ms "
              f"-> batching {min(singles) / min(batched):.2f}x")
        del recognizer

        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        print(f"{'max_batch':>9} {'clients':>7} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>7} {'p50 vs in-process':>18} "
              f"{'req/s vs in-process':>20}")
        for max_batch in args.max_batch:
            http(args, directory, data, env, max_batch, base_p50, base_rate)
        print(f"({args.requests} requests per client; latency = one request's round trip)")


def http(args: argparse.Namespace, directory: Path, data: bytes, env: dict[str, str], max_batch: int,
         base_p50: float, base_rate: float) -> None:
    """Start the server with ``max_batch`` and measure every client count against it."""
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(directory), "--port", str(args.port), "--max-batch", str(max_batch),
         "--classes", str(args.classes), "--image-size", str(args.image_size)], env=env,
    )
    try:
        base = f"http://127.0.0.1:{args.port}"
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).json()["status"] == "ok":
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or child.poll() is not None:
                raise SystemExit("the server did not start")
            time.sleep(0.5)
        asyncio.run(clients(f"{base}/v1/identify", data, 2, 3))  # warm-up
        for n in args.clients:
            latencies, wall = asyncio.run(clients(f"{base}/v1/identify", data, n, args.requests))
            p50, p99 = percentiles(latencies)
            rate = len(latencies) / wall
            print(f"{max_batch:>9} {n:>7} {1000 * p50:>8.1f} {1000 * p99:>8.1f} {rate:>7.1f} "
                  f"{p50 / base_p50:>17.2f}x {rate / base_rate:>19.2f}x")
    finally:
        child.terminate()
        child.wait(timeout=30)

if __name__ == "__main__":
    main()
