"""How far a model's scores can be trusted: expected calibration error, and the position floor below
which the classifier answers ``unsure`` instead of a confident wrong position.

The floor is chosen on calibration data (never a test set): the lowest top-position score at which the
positions the model keeps are right at least ``target`` of the time. It is stored in metadata.json as
``position_floor`` (with ``position_floor_chosen_on``); at inference a top score below it means
``unsure`` (``processor.model.Prediction.position_at``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..model import METADATA_FILE, Classifier
from .dataset import NO_POSITION, data_hash, read_labels
from .evaluate import predict_items

FLOOR_TARGET = 0.9  # share of kept positions that must be right on the calibration data
BINS = 10


def expected_calibration_error(confidence: NDArray[np.float64], correct: NDArray[np.bool_], bins: int = BINS) -> float:
    """ECE: the mean gap between confidence and accuracy over equal-width confidence bins, weighted by
    how many predictions fall in each bin."""
    if not len(confidence):
        return 0.0
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    gap = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            gap += (
                abs(float(correct[inside].mean()) - float(confidence[inside].mean())) * inside.sum() / len(confidence)
            )
    return round(gap, 4)


def choose_floor(confidence: NDArray[np.float64], correct: NDArray[np.bool_], target: float = FLOOR_TARGET) -> float:
    """The lowest floor (0.00-0.99, in steps of 0.01) at which the kept predictions are right at least
    ``target`` of the time; 0.0 when all of them already are."""
    for floor in np.round(np.arange(0.0, 1.0, 0.01), 2):
        kept = confidence >= floor
        if kept.any() and correct[kept].mean() >= target:
            return float(floor)
    return 0.99


def floor_report(confidence: NDArray[np.float64], correct: NDArray[np.bool_], floor: float) -> dict[str, Any]:
    kept = confidence >= floor
    return {
        "floor": floor,
        "coverage": round(float(kept.mean()), 4) if len(kept) else 0.0,
        "accuracy_kept": round(float(correct[kept].mean()), 4) if kept.any() else None,
        "accuracy_all": round(float(correct.mean()), 4) if len(correct) else None,
        "unsure": int((~kept).sum()),
        "confident_wrong": int((kept & ~correct).sum()),
    }


def position_confidence(model_dir: Path, data: Sequence[Path]) -> tuple[NDArray[np.float64], NDArray[np.bool_], Any]:
    """Top position score and whether the top position is right, for every image with a position label."""
    classifier = Classifier(model_dir)
    items = [item for folder in data for item in read_labels(folder) if item.position != NO_POSITION]
    predictions = predict_items(classifier, items)
    confidence = np.array([max(p.position_scores.values()) for p in predictions])
    correct = np.array([p.position == i.position for p, i in zip(predictions, items, strict=True)])
    return confidence, correct, (classifier, items)


def calibrate_floor(
    model_dir: Path, data: Sequence[Path], target: float = FLOOR_TARGET, write: bool = False
) -> dict[str, Any]:
    """Choose the position floor on labelled calibration images (pooled); with ``write``, store it."""
    confidence, correct, (classifier, items) = position_confidence(model_dir, data)
    floor = choose_floor(confidence, correct, target)
    names = [str(folder) for folder in data]
    if write:
        meta = {
            **classifier.info.raw,
            "position_floor": floor,
            "position_floor_chosen_on": {
                "data": names,
                "images": len(items),
                "data_hash": data_hash(items),
                "target_accuracy": target,
            },
        }
        (model_dir / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return {"data": names, "images": len(items), "ece": expected_calibration_error(confidence, correct)} | floor_report(
        confidence, correct, floor
    )
