"""The figures that matter, on real photos: positions, banners, calibration and heroes per listing.

Reads a split folder that ``processor corpus splits`` wrote (labels.csv with ``car_id``); every
photo of one car forms one listing, and the hero is chosen as the worker chooses it (the
preferred-position rule over banner-free photos, positions below the model's floor unsure).
"""

from __future__ import annotations

import csv
import itertools
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..listings.rules import HeroRule, ImageResult, ListingRules, compute_state
from ..model import Classifier, Prediction
from .dataset import Labelled
from .evaluate import predict_items
from .report import confusion, per_class

EXTERIOR = ("front", "front_three_quarter", "side", "rear_three_quarter", "rear")
HERO_MIN_PHOTOS = 5  # listings of five or more photos, as the outside check judges them


def read_split(folder: Path) -> tuple[list[Labelled], list[str]]:
    """The labelled photos of a split folder and the car of each."""
    with (folder / "labels.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    items = [Labelled(folder / r["file"], int(r["banner"]), r["position"]) for r in rows]
    return items, [r.get("car_id") or r["file"] for r in rows]


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """ECE of the top-1 position: the mean gap between confidence and accuracy over equal-width bins."""
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for low, high in itertools.pairwise(edges):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            total += inside.mean() * abs(confidence[inside].mean() - correct[inside].mean())
    return round(float(total), 4)


def heroes(
    items: list[Labelled], cars: list[str], predictions: list[Prediction], classifier: Classifier
) -> dict[str, Any]:
    """How many listings (cars with HERO_MIN_PHOTOS+ photos) get an exterior hero, and a banner-free one.

    A listing is judged when it truly has a banner-free exterior photo, so that an exterior hero is possible:
    a repair page of engine photos, or a listing whose every exterior view carries an overlay, is counted
    apart. A judged listing without a hero (the model called every photo bannered) is a miss."""
    rules = ListingRules(hero_rule=HeroRule.PREFERRED_POSITION)
    by_car: dict[str, list[int]] = {}
    for index, car in enumerate(cars):
        by_car.setdefault(car, []).append(index)
    judged = exterior = clean = no_hero = impossible = 0
    wrong: Counter[str] = Counter()
    for car, indexes in sorted(by_car.items()):
        if len(indexes) < HERO_MIN_PHOTOS:
            continue
        results = [
            ImageResult(
                image_id=str(i),
                position_index=n,
                has_banner=predictions[i].banner_score >= classifier.banner_threshold,
                position=predictions[i].position_at(classifier.info.position_floor),
                model_version=classifier.info.version,
            )
            for n, i in enumerate(indexes)
        ]
        if not any(items[i].position in EXTERIOR and not items[i].banner for i in indexes):
            impossible += 1
            continue
        state = compute_state(car, results, rules)
        judged += 1
        if state.hero_image_id is None:
            no_hero += 1
            continue
        truth = items[int(state.hero_image_id)]
        exterior += truth.position in EXTERIOR
        clean += truth.position in EXTERIOR and not truth.banner
        if truth.position not in EXTERIOR:
            wrong[truth.position] += 1
    return {
        "listings": judged,
        "exterior_hero": exterior,
        "share": round(exterior / judged, 4) if judged else None,
        "exterior_banner_free_hero": clean,
        "no_hero": no_hero,
        "not_judged_no_banner_free_exterior": impossible,
        "wrong_heroes": dict(wrong),
    }


def real_report(model_dir: Path, folder: Path) -> dict[str, Any]:
    """Every real-photo figure of one model on one split folder."""
    items, cars = read_split(folder)
    classifier = Classifier(model_dir)
    predictions = predict_items(classifier, items)
    positions = list(classifier.info.positions)
    truth = [i.position for i in items]
    predicted = [p.position for p in predictions]
    labels = sorted(set(truth) | set(positions))
    top = np.array([max(p.position_scores.values()) for p in predictions])
    correct = np.array([t == p for t, p in zip(truth, predicted, strict=True)], dtype=np.float64)
    exterior = [k for k, t in enumerate(truth) if t in EXTERIOR]
    cars_only = [k for k, t in enumerate(truth) if t != "other"]
    banner_truth = np.array([i.banner for i in items])
    called = np.array([p.banner_score >= classifier.banner_threshold for p in predictions])
    return {
        "model": {"name": classifier.info.name, "version": classifier.info.version, "dir": str(model_dir)},
        "data": str(folder),
        "photos": len(items),
        "cars": len(set(cars)),
        "position": {
            "accuracy": round(float(correct.mean()), 4),
            "exterior_accuracy": round(float(correct[exterior].mean()), 4) if exterior else None,
            "car_photos_called_other": round(float(np.mean([predicted[k] == "other" for k in cars_only])), 4)
            if cars_only
            else None,
            "unsure_share": round(float(np.mean(top < classifier.info.position_floor)), 4),
            "calibration_error": expected_calibration_error(top, correct),
            "per_class": per_class(truth, predicted, labels),
            "confusion": {"labels": labels, "matrix": confusion(truth, predicted, labels)},
        },
        "banner": {
            "threshold": classifier.banner_threshold,
            "photos_with_overlay": int(banner_truth.sum()),
            "overlays_found": round(float(called[banner_truth == 1].mean()), 4) if banner_truth.any() else None,
            "false_alarms": _share(called[banner_truth == 0]),
            # the same on photos of a car only: flyers, screenshots and showroom signs left out
            "false_alarms_on_car_photos": _share(called[(banner_truth == 0) & (np.array(truth) != "other")]),
        },
        "heroes": heroes(items, cars, predictions, classifier),
    }


def _share(flags: np.ndarray) -> float | None:
    return round(float(flags.mean()), 4) if flags.size else None
