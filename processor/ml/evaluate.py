"""Evaluate a model directory on labelled images: accuracy, per-class P/R/F1, ROC AUC, confusion matrices."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .model import METADATA_FILE, Classifier, Prediction
from .train import NO_POSITION, Labelled, best_threshold, data_hash, load_arrays, read_labels

BATCH = 64


def roc_auc(scores: NDArray[np.float64], labels: NDArray[np.int64]) -> float | None:
    """Area under the ROC curve (the Mann-Whitney statistic, ties counted half)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if not len(pos) or not len(neg):
        return None
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    ranks[order] = np.arange(1, len(order) + 1)
    combined = np.concatenate([pos, neg])
    for value in np.unique(combined):  # average ranks of ties
        tied = combined == value
        ranks[tied] = ranks[tied].mean()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def per_class(truth: list[str], predicted: list[str], labels: list[str]) -> dict[str, dict[str, float]]:
    report = {}
    for label in labels:
        tp = sum(t == p == label for t, p in zip(truth, predicted, strict=True))
        fp = sum(p == label != t for t, p in zip(truth, predicted, strict=True))
        fn = sum(t == label != p for t, p in zip(truth, predicted, strict=True))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        report[label] = {
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
            "support": sum(t == label for t in truth),
        }
    return report


def confusion(truth: list[str], predicted: list[str], labels: list[str]) -> list[list[int]]:
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for t, p in zip(truth, predicted, strict=True):
        if t in index and p in index:
            matrix[index[t]][index[p]] += 1
    return matrix


def evaluate(model_dir: Path, data: Path) -> dict[str, Any]:
    """Score every labelled image under ``data`` with the model in ``model_dir``."""
    return evaluate_items(model_dir, read_labels(data), str(data))


def _predict(classifier: Classifier, items: list[Labelled]) -> list[Prediction]:
    pixels = load_arrays(items, classifier.input_size)
    predictions = []
    for start in range(0, len(items), BATCH):
        predictions += classifier.predict(list(pixels[start : start + BATCH]))
    return predictions


def calibrate(model_dir: Path, data: Sequence[Path], write: bool = False) -> dict[str, Any]:
    """Choose the banner threshold on labelled images, one or more sets pooled (``train.best_threshold``);
    with ``write``, store it in the model's metadata. Returns the old and new threshold and the accuracy at each."""
    classifier = Classifier(model_dir)
    items = [item for folder in data for item in read_labels(folder)]
    scores = np.array([p.banner_score for p in _predict(classifier, items)])
    labels = np.array([i.banner for i in items])
    thresholds = {"old": classifier.banner_threshold, "new": best_threshold(scores, labels)}
    names = [str(folder) for folder in data]
    if write:
        meta = {
            **classifier.info.raw,
            "banner_threshold": thresholds["new"],
            "threshold_chosen_on": {"data": names, "images": len(items), "data_hash": data_hash(items)},
        }
        (model_dir / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return {
        "data": names,
        "images": len(items),
        "threshold": thresholds,
        "accuracy": {k: float(np.mean((scores >= t) == labels)) for k, t in thresholds.items()},
    }


def evaluate_items(model_dir: Path, items: list[Labelled], data: str) -> dict[str, Any]:
    """Score labelled images with the model in ``model_dir``; ``data`` names them in the report."""
    classifier = Classifier(model_dir)
    predictions = _predict(classifier, items)
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


def build_report(
    model: dict[str, str],
    threshold: float,
    positions: tuple[str, ...],
    items: list[Labelled],
    scores: NDArray[np.float64],
    predicted_positions: list[str],
    data: str,
) -> dict[str, Any]:
    """The evaluation report from a model's scores and predicted positions for labelled images."""
    truth_banner = np.array([i.banner for i in items])
    banner_names = ["no_banner", "banner"]
    truth_b = [banner_names[t] for t in truth_banner]
    pred_b = [banner_names[int(s >= threshold)] for s in scores]
    report: dict[str, Any] = {
        "model": model,
        "data": data,
        "images": len(items),
        "banner": {
            "threshold": threshold,
            "accuracy": round(float(np.mean((scores >= threshold) == truth_banner)), 4),
            "roc_auc": roc_auc(scores, truth_banner),
            "per_class": per_class(truth_b, pred_b, banner_names),
            "confusion": {"labels": banner_names, "matrix": confusion(truth_b, pred_b, banner_names)},
        },
    }
    known = [(i.position, p) for i, p in zip(items, predicted_positions, strict=True) if i.position != NO_POSITION]
    if known:
        labels = sorted({t for t, _ in known} | set(positions))
        truth_p, pred_p = [t for t, _ in known], [p for _, p in known]
        report["position"] = {
            "accuracy": round(sum(t == p for t, p in known) / len(known), 4),
            "per_class": per_class(truth_p, pred_p, labels),
            "confusion": {"labels": labels, "matrix": confusion(truth_p, pred_p, labels)},
        }
    return report


def plot_confusion(report: dict[str, Any], path: Path) -> None:
    """Confusion matrices as one PNG (matplotlib is needed for this only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heads = [h for h in ("banner", "position") if h in report]
    fig, axes = plt.subplots(1, len(heads), figsize=(5 * len(heads) + 1, 5), squeeze=False)
    for ax, head in zip(axes[0], heads, strict=True):
        labels, matrix = report[head]["confusion"]["labels"], np.array(report[head]["confusion"]["matrix"])
        ax.imshow(matrix, cmap="Blues")
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{head}: accuracy {report[head]['accuracy']:.3f}")
        for (r, c), v in np.ndenumerate(matrix):
            ax.text(c, r, str(v), ha="center", va="center", color="white" if v > matrix.max() / 2 else "black")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
