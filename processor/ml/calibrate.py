"""Choose a model's banner threshold on labelled photographs (``processor calibrate``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..model import METADATA_FILE, Classifier
from .dataset import data_hash, read_labels
from .evaluate import predict_items
from .report import best_threshold, threshold_for_false_alarms


def calibrate(
    model_dir: Path, data: Sequence[Path], write: bool = False, false_alarms: float | None = None
) -> dict[str, Any]:
    """Choose the banner threshold on labelled images, one or more sets pooled: the lowest that keeps false
    alarms within ``false_alarms`` (``report.threshold_for_false_alarms``), else the accuracy rule
    (``report.best_threshold``); with ``write``, store it in the model's metadata. Returns the old and new
    threshold and the accuracy and false-alarm share at each."""
    classifier = Classifier(model_dir)
    items = [item for folder in data for item in read_labels(folder)]
    scores = np.array([p.banner_score for p in predict_items(classifier, items)])
    labels = np.array([i.banner for i in items])
    if false_alarms is None:
        rule, chosen = "accuracy", best_threshold(scores, labels)
    else:
        rule, chosen = f"false_alarms<={false_alarms}", threshold_for_false_alarms(scores, labels, false_alarms)
    thresholds = {"old": classifier.banner_threshold, "new": chosen}
    names = [str(folder) for folder in data]
    if write:
        meta = {
            **classifier.info.raw,
            "banner_threshold": thresholds["new"],
            "threshold_chosen_on": {"data": names, "images": len(items), "data_hash": data_hash(items), "rule": rule},
        }
        (model_dir / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return {
        "data": names,
        "images": len(items),
        "rule": rule,
        "threshold": thresholds,
        "accuracy": {k: float(np.mean((scores >= t) == labels)) for k, t in thresholds.items()},
        "false_alarms": {k: float(np.mean(scores[labels == 0] >= t)) for k, t in thresholds.items()},
    }
