"""Evaluation reports: accuracy, per-class precision/recall/F1, ROC AUC, confusion matrices, and the
banner threshold rule shared by training and calibration."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .dataset import NO_POSITION, Labelled

REPORT_FILE = "evaluation.json"


def best_threshold(scores: NDArray[np.float64], labels: NDArray[np.int64]) -> float:
    """The decision threshold: the middle of the range of thresholds whose accuracy is within one standard
    error of the best. On real photographs accuracy is flat over a wide range and the single best point
    moves with the sample; the middle of that range does not, and a shift of the scores on photographs
    unlike these moves fewer images across it."""
    candidates = np.linspace(0.05, 0.95, 91)
    accuracy = np.array([np.mean((scores >= t) == labels) for t in candidates])
    top = float(accuracy.max())
    tolerance = float(np.sqrt(top * (1 - top) / max(1, len(labels))))
    return round(float(np.median(candidates[accuracy >= top - tolerance - 1e-9])), 3)


def threshold_for_false_alarms(scores: NDArray[np.float64], labels: NDArray[np.int64], budget: float) -> float:
    """The lowest threshold (three decimals) that calls at most ``budget`` of the banner-free images bannered.

    An operating point set as a false-alarm rate carries over to other photographs, where the accuracy
    rule's flat range lets it wander from run to run (figures: docs/model/index.md)."""
    if not 0 <= budget < 1:
        raise ValueError(f"false-alarm budget {budget}: a share from 0 to below 1")
    clean = np.sort(scores[labels == 0])[::-1]
    if not len(clean):
        raise ValueError("no banner-free images to count false alarms on")
    allowed = int(np.floor(budget * len(clean) + 1e-9))  # false alarms the budget admits
    if allowed >= len(clean):
        return 0.0
    return min(1.0, math.floor(float(clean[allowed]) * 1000 + 1) / 1000)  # just above the first one not admitted


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
    """Precision, recall, F1 and support of each label."""
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
    """Counts by (true label, predicted label), rows and columns in ``labels`` order."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for t, p in zip(truth, predicted, strict=True):
        if t in index and p in index:
            matrix[index[t]][index[p]] += 1
    return matrix


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


def write_report(model_dir: Path, report: dict[str, Any]) -> None:
    """REPORT_FILE in a model directory, plus confusion matrices as a PNG when matplotlib is installed."""
    (model_dir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    with contextlib.suppress(ImportError):
        plot_confusion(report, model_dir / "confusion.png")


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
