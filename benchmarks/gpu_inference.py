"""The inference stage on an accelerator (or any Keras backend), sweeping batch sizes.

    KERAS_BACKEND=jax python -m benchmarks.gpu_inference --json gpu.json
    KERAS_BACKEND=tensorflow python -m benchmarks.gpu_inference --batch-sizes 1,32

Loads the shipped model directory (or ``--model``) in safe mode and reports images/s and the
per-call latency (p50/p95) of a compiled forward pass at each batch size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

DEFAULT_MODEL = Path(__file__).parents[1] / "processor" / "models" / "default"


def devices() -> list[str]:
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return [str(d) for d in jax.devices()]
    if backend == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_logical_devices()]
    return [backend]


def measure(model: Any, batch_size: int, size: tuple[int, int], min_s: float) -> dict[str, float]:
    import numpy as np

    batch = np.random.default_rng(0).integers(0, 255, (batch_size, size[1], size[0], 3), dtype=np.uint8)
    for _ in range(3):  # compile and warm up
        model.predict_on_batch(batch)
    calls: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < min_s or len(calls) < 5:
        t = time.perf_counter()
        out = model.predict_on_batch(batch)
        np.asarray(out["banner"])  # results on the host: the call is complete
        calls.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - start
    return {
        "images_per_s": round(batch_size * len(calls) / elapsed, 1),
        "latency_ms_p50": round(float(np.percentile(calls, 50)) * 1000, 3),
        "latency_ms_p95": round(float(np.percentile(calls, 95)) * 1000, 3),
        "calls": len(calls),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--batch-sizes", default="1,8,32,64,128,256,512")
    parser.add_argument("--seconds", type=float, default=3.0, help="Measuring time per batch size.")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import keras

    meta = json.loads((args.model / "metadata.json").read_text())
    model = keras.models.load_model(args.model / "model.keras", compile=False, safe_mode=True)
    size = (int(meta["input_size"][0]), int(meta["input_size"][1]))
    report: dict[str, Any] = {
        "backend": keras.backend.backend(),
        "devices": devices(),
        "model": meta["name"],
        "version": meta["version"],
        "input_size": size,
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "by_batch_size": {},
    }
    for bs in (int(b) for b in args.batch_sizes.split(",")):
        report["by_batch_size"][bs] = measure(model, bs, size, args.seconds)
        print(f"batch {bs:>4}: {report['by_batch_size'][bs]}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
