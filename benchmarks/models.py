"""Inference speed of model directories side by side: images/s at one batch size, per runtime.

    python -m benchmarks.models --model processor/models/default:keras --model processor/models/default:onnx \\
        --model OLD_MODEL_DIR:keras --rounds 3 --seconds 5

Each ``DIR:RUNTIME`` (runtime: keras, onnx or auto) is loaded once through ``processor.model.Classifier``,
the code the workers run; then the rounds alternate over all of them, so a noisy shared host slows each
one alike. Reports the median of the rounds and the ratio to the first model given.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from processor.model import Classifier


def rate(classifier: Classifier, batch_size: int, seconds: float) -> float:
    """Images/s of ``Classifier.predict`` on random uint8 batches for at least ``seconds``."""
    width, height = classifier.input_size
    batch = list(np.random.default_rng(0).integers(0, 256, (batch_size, height, width, 3), dtype=np.uint8))
    classifier.predict(batch)  # warm up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        classifier.predict(batch)
        done += batch_size
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="DIR:RUNTIME (repeatable)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    loaded = {}
    for spec in args.model:
        folder, _, runtime = spec.rpartition(":") if ":" in spec else (spec, "", "auto")
        loaded[spec] = Classifier(Path(folder), runtime=runtime)
    rounds: dict[str, list[float]] = {spec: [] for spec in loaded}
    for _ in range(args.rounds):
        for spec, classifier in loaded.items():
            rounds[spec].append(rate(classifier, args.batch_size, args.seconds))
    first = statistics.median(rounds[args.model[0]])
    report: dict[str, Any] = {"batch_size": args.batch_size, "rounds": args.rounds, "models": {}}
    for spec, classifier in loaded.items():
        median = statistics.median(rounds[spec])
        report["models"][spec] = {
            "model": f"{classifier.info.name} {classifier.info.version}",
            "runtime": classifier.runtime,
            "images_per_s": round(median, 1),
            "rounds": [round(r, 1) for r in rounds[spec]],
            "ratio_to_first": round(median / first, 3),
        }
        print(f"{spec}: {median:.0f} images/s (x{median / first:.2f}), rounds {[round(r) for r in rounds[spec]]}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
