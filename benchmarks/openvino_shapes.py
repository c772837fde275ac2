"""OpenVINO with one compilation per batch size (the worker's way) against one with a dynamic batch.

``python -m benchmarks.openvino_shapes [--model DIR] [--json PATH]``: images/s of the same ``model.onnx``
through both, at each batch size, in alternating rounds, so a host slowing down weighs on both alike.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from statistics import median

import click
import numpy as np

from processor.model import openvino_fixed_batch
from processor.settings import DEFAULT_MODEL_DIR

LATENCY = {"PERFORMANCE_HINT": "LATENCY"}  # the worker's configuration
DYNAMIC = LATENCY | {"CPU_RUNTIME_CACHE_CAPACITY": 16}  # as the worker had it: an executor kept per input shape


def _rate(request: object, batch: np.ndarray, seconds: float) -> float:
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        request.infer({0: batch})  # type: ignore[attr-defined]
        done += len(batch)
    return done / (time.perf_counter() - start)


@click.command()
@click.option("--model", "model_dir", type=click.Path(path_type=Path), default=DEFAULT_MODEL_DIR)
@click.option("--sizes", default="1,4,8,32", show_default=True)
@click.option("--rounds", default=6, show_default=True)
@click.option("--seconds", default=1.0, show_default=True, help="Per round and side.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None)
def main(model_dir: Path, sizes: str, rounds: int, seconds: float, json_out: Path | None) -> None:
    import openvino as ov

    core = ov.Core()
    source = core.read_model(str(model_dir / "model.onnx"))
    dynamic = core.compile_model(source, "CPU", DYNAMIC).create_infer_request()
    results = {}
    for size in (int(s) for s in sizes.split(",")):
        static = openvino_fixed_batch(core, source, size, LATENCY).create_infer_request()
        shape = source.inputs[0].get_partial_shape()
        h, w = shape[1].get_length(), shape[2].get_length()
        batch = np.random.default_rng(size).integers(0, 255, (size, h, w, 3), dtype=np.uint8)
        rates: dict[str, list[float]] = {"static": [], "dynamic": []}
        for r in range(rounds):
            for side in ("static", "dynamic") if r % 2 else ("dynamic", "static"):
                rates[side].append(_rate(static if side == "static" else dynamic, batch, seconds))
        ratios = [s / d for s, d in zip(rates["static"], rates["dynamic"], strict=True)]
        results[size] = {
            "images_per_s": {k: [round(v, 1) for v in vs] for k, vs in rates.items()},
            "median_ratio_static_dynamic": round(median(ratios), 3),
        }
        click.echo(
            f"batch {size}: static {median(rates['static']):.0f}, dynamic {median(rates['dynamic']):.0f} "
            f"images/s, ratio {median(ratios):.2f}"
        )
    record = {"model": str(model_dir), "rounds": rounds, "seconds_per_round": seconds, "by_batch_size": results}
    if json_out is not None:
        json_out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
