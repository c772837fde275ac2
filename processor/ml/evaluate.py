"""Evaluate a model directory on labelled images (``processor evaluate``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..model import Classifier, Prediction
from .dataset import Labelled, load_arrays, read_labels
from .report import build_report

BATCH = 64


def evaluate(model_dir: Path, data: Path) -> dict[str, Any]:
    """Score every labelled image under ``data`` with the model in ``model_dir``."""
    return evaluate_items(model_dir, read_labels(data), str(data))


def predict_items(classifier: Classifier, items: list[Labelled]) -> list[Prediction]:
    """The classifier's predictions for labelled files, in batches."""
    pixels = load_arrays(items, classifier.input_size)
    predictions = []
    for start in range(0, len(items), BATCH):
        predictions += classifier.predict(list(pixels[start : start + BATCH]))
    return predictions


def evaluate_items(model_dir: Path, items: list[Labelled], data: str) -> dict[str, Any]:
    """Score labelled images with the model in ``model_dir``; ``data`` names them in the report."""
    classifier = Classifier(model_dir)
    predictions = predict_items(classifier, items)
    info = classifier.info
    return build_report(
        {"name": info.name, "version": info.version, "dir": str(model_dir)},
        classifier.banner_threshold,
        info.positions,
        items,
        np.array([p.banner_score for p in predictions]),
        [p.position for p in predictions],
        data,
    )
