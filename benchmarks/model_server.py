"""In-process inference against the remote tier, side by side in one run: the cost of the hop.

    python -m benchmarks.model_server --images 512 --batch-size 32 --concurrency 1,4 --json server.json

Scores the same decoded photos (generated listing photos at the model's input size) three ways on this
machine: the worker's own ONNX Runtime session (``Classifier``), and the worker's remote client
(``RemoteClassifier``, KServe v2 over HTTP with binary tensors) against ``processor serve-model``'s
Triton on 127.0.0.1 (started here, ONNX Runtime in its Python backend, dynamic batcher on), with
1..N batches in flight. Reports images/s, per-batch latency p50/p95, the ratio remote ÷ local and the
batch sizes Triton's dynamic batcher ran (from its own metrics). The figures are ratios on one host:
client and server share the same cores, so a remote tier on its own machine (or GPU) would do better.

    python -m benchmarks.model_server --sweep "8,16,32;4,8;-" --workers 1,2,4 --worker-batch-size 8

The sweep: the server's side instead. For each set of preferred batch sizes (``-``: dynamic batching with
none, so Triton runs what it has when its queue delay ends) a fresh server, and 1..N workers sending it
small batches at once (each worker one remote client with ``--in-flight`` batches in flight; here they are
asyncio clients of one process, so the figures show how the server merges them, not worker CPU). Reports
images/s, batch latency and the mean batch Triton ran (images ÷ model executions).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import re
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from processor.decode import Decoder
from processor.inference import RemoteClassifier
from processor.ml import synth
from processor.model import Classifier, ModelInfo
from processor.serving.server import ModelServer
from processor.serving.triton import Endpoints
from processor.settings import DEFAULT_MODEL_DIR, Settings


def photos(n: int, size: tuple[int, int]) -> list[NDArray[np.uint8]]:
    rng = random.Random(5)
    decoder = Decoder.from_settings(Settings())
    distinct = []
    for i in range(min(n, 32)):
        img = synth.render(rng, synth.POSITIONS[i % len(synth.POSITIONS)], i % 3 == 0, (640, 480))
        distinct.append(decoder.decode(synth.to_jpeg(img, 85), size).pixels)
    return [distinct[i % len(distinct)] for i in range(n)]


def header(info: ModelInfo, images: list[NDArray[np.uint8]]) -> dict[str, Any]:
    """What every result of this benchmark starts with: the host, the model and how many images."""
    return {
        "host": {"machine": platform.machine(), "python": platform.python_version()},
        "model": f"{info.name} {info.version}",
        "images": len(images),
    }


def summary(images: int, elapsed_s: float, latencies_s: list[float]) -> dict[str, float]:
    ordered = sorted(latencies_s)
    return {
        "images_per_s": round(images / elapsed_s, 1),
        "batch_p50_ms": round(statistics.median(ordered) * 1000, 2),
        "batch_p95_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000, 2),
    }


def local(images: list[NDArray[np.uint8]], batch_size: int) -> dict[str, float]:
    clf = Classifier(DEFAULT_MODEL_DIR, runtime="onnx")
    clf.predict(images[:batch_size])  # warm
    latencies = []
    started = time.perf_counter()
    for i in range(0, len(images), batch_size):
        t = time.perf_counter()
        clf.predict(images[i : i + batch_size])
        latencies.append(time.perf_counter() - t)
    return summary(len(images), time.perf_counter() - started, latencies)


async def drain(
    client: RemoteClassifier, queue: asyncio.Queue[list[NDArray[np.uint8]]], latencies: list[float]
) -> None:
    """Send the queue's batches one at a time, recording each request's latency."""
    while not queue.empty():
        batch = queue.get_nowait()
        t = time.perf_counter()
        await client.infer(batch)
        latencies.append(time.perf_counter() - t)


async def remote(
    settings: Settings, images: list[NDArray[np.uint8]], batch_size: int, concurrency: int
) -> dict[str, float]:
    client = RemoteClassifier(settings.with_overrides(inference_max_in_flight=concurrency))
    latencies: list[float] = []
    batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
    queue: asyncio.Queue[list[NDArray[np.uint8]]] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)

    try:
        await client.infer(images[:batch_size])  # warm: connection, config
        started = time.perf_counter()
        await asyncio.gather(*(drain(client, queue, latencies) for _ in range(concurrency)))
        return summary(len(images), time.perf_counter() - started, latencies)
    finally:
        await client.close()


async def workers(
    settings: Settings, images: list[NDArray[np.uint8]], batch_size: int, count: int, in_flight: int, metrics_url: str
) -> dict[str, float]:
    """``count`` workers, each its own remote client with ``in_flight`` batches in flight, share the images;
    with the mean batch the server ran for them."""
    clients = [RemoteClassifier(settings.with_overrides(inference_max_in_flight=in_flight)) for _ in range(count)]
    latencies: list[float] = []
    queues: list[asyncio.Queue[list[NDArray[np.uint8]]]] = [asyncio.Queue() for _ in clients]
    for i, start in enumerate(range(0, len(images), batch_size)):
        queues[i % count].put_nowait(images[start : start + batch_size])

    try:
        await asyncio.gather(*(c.infer(images[:batch_size]) for c in clients))  # warm: connections, config
        before = server_batches(metrics_url)
        started = time.perf_counter()
        await asyncio.gather(
            *(drain(c, q, latencies) for c, q in zip(clients, queues, strict=True) for _ in range(in_flight))
        )
        row = summary(len(images), time.perf_counter() - started, latencies)
        after = server_batches(metrics_url)
        executions = after["executions"] - before["executions"]
        row["server_mean_batch"] = (
            round((after["inferences"] - before["inferences"]) / executions, 1) if executions else 0
        )
        return row
    finally:
        await asyncio.gather(*(c.close() for c in clients))


async def sweep(args: argparse.Namespace) -> dict[str, Any]:
    """Preferred batch sizes by workers per server, a fresh server per set of sizes."""
    info = Classifier(DEFAULT_MODEL_DIR, runtime="onnx").info
    images = photos(args.images, info.input_size)
    results: dict[str, Any] = {}
    for sizes in args.sweep:
        label = ",".join(map(str, sizes)) or "-"
        endpoints = Endpoints.free()
        with tempfile.TemporaryDirectory() as work:
            settings = Settings(
                follow_registry=False,
                inference_url=endpoints.http_url,
                model_server_repository=Path(work) / "repository",
                model_server_preferred_batch_sizes=sizes,
                model_server_max_queue_delay_ms=args.queue_delay_ms,
                model_server_threads=args.server_threads,
                model_server_instances=args.server_instances,
            )
            server = ModelServer(settings, endpoints, Path(work) / "server")
            await server.start()
            try:
                for count in args.workers:
                    row = await workers(
                        settings, images, args.worker_batch_size, count, args.in_flight, endpoints.metrics_url
                    )
                    results[f"preferred {label} / {count} worker(s)"] = row
                    print(f"preferred {label}, {count} worker(s): {row}", flush=True)
            finally:
                await asyncio.to_thread(server.triton.stop)
    return {
        **header(info, images),
        "worker_batch_size": args.worker_batch_size,
        "in_flight_per_worker": args.in_flight,
        "queue_delay_ms": args.queue_delay_ms,
        "server_instances": args.server_instances,
        "server_threads": args.server_threads,
        "results": results,
    }


def server_batches(metrics_url: str) -> dict[str, float]:
    """Triton's own counts: requests and the model executions its dynamic batcher ran for them."""
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()

    def total(name: str) -> float:
        return sum(float(v) for v in re.findall(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.MULTILINE))

    return {
        "requests": total("nv_inference_request_success"),
        "executions": total("nv_inference_exec_count"),
        "inferences": total("nv_inference_count"),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    info = Classifier(DEFAULT_MODEL_DIR, runtime="onnx").info
    images = photos(args.images, info.input_size)
    endpoints = Endpoints.free()
    with tempfile.TemporaryDirectory() as work:
        settings = Settings(
            follow_registry=False,
            inference_url=endpoints.http_url,
            model_server_repository=Path(work) / "repository",
            model_server_max_queue_delay_ms=args.queue_delay_ms,
            model_server_threads=args.server_threads,
        )
        server = ModelServer(settings, endpoints, Path(work) / "server")
        await server.start()
        try:
            print(f"local: {len(images)} images, batch {args.batch_size}", flush=True)
            results: dict[str, Any] = {"local": local(images, args.batch_size)}
            print(f"  {results['local']}", flush=True)
            for n in args.concurrency:
                print(f"remote: {n} batch(es) in flight", flush=True)
                results[f"remote_{n}"] = await remote(settings, images, args.batch_size, n)
                results[f"remote_{n}"]["ratio_to_local"] = round(
                    results[f"remote_{n}"]["images_per_s"] / results["local"]["images_per_s"], 3
                )
                print(f"  {results[f'remote_{n}']}", flush=True)
            results["server"] = server_batches(endpoints.metrics_url)
        finally:
            await asyncio.to_thread(server.triton.stop)
    return {
        **header(info, images),
        "batch_size": args.batch_size,
        "results": results,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512, help="images scored per configuration")
    parser.add_argument("--batch-size", type=int, default=32, help="the worker's batch size")
    parser.add_argument("--concurrency", default="1,4", help="remote batches in flight (comma-separated)")
    parser.add_argument("--queue-delay-ms", type=float, default=2.0, help="the server's max queue delay")
    parser.add_argument("--server-threads", type=int, default=1, help="ONNX Runtime threads in the server")
    parser.add_argument("--server-instances", type=int, default=1, help="model instances in the server (sweep)")
    parser.add_argument(
        "--sweep", default=None, help='preferred batch sizes to compare, ";"-separated ("-": none), e.g. "8,16,32;-"'
    )
    parser.add_argument("--workers", default="1,2,4", help="workers sharing the server (sweep, comma-separated)")
    parser.add_argument("--worker-batch-size", type=int, default=8, help="each worker's batch size (sweep)")
    parser.add_argument("--in-flight", type=int, default=2, help="batches in flight per worker (sweep)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if args.sweep is not None:
        args.sweep = [
            tuple(int(b) for b in part.split(",") if b.strip() and b.strip() != "-") for part in args.sweep.split(";")
        ]
        args.workers = [int(w) for w in args.workers.split(",") if w.strip()]
        report = asyncio.run(sweep(args))
        print(f"{'configuration':<32} {'images/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'server batch':>13}")
        for name, r in report["results"].items():
            latency = f"{r['batch_p50_ms']:>8} {r['batch_p95_ms']:>8}"
            print(f"{name:<32} {r['images_per_s']:>9} {latency} {r['server_mean_batch']:>13}")
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
        return
    report = asyncio.run(run(args))
    print(f"{'configuration':<14} {'images/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'÷ local':>8}")
    for name, r in report["results"].items():
        if name == "server":
            continue
        ratio = r.get("ratio_to_local", 1.0)
        print(f"{name:<14} {r['images_per_s']:>9} {r['batch_p50_ms']:>8} {r['batch_p95_ms']:>8} {ratio:>8}")
    s = report["results"]["server"]
    print(f"Triton ran {s['inferences']:.0f} images in {s['executions']:.0f} model executions")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
