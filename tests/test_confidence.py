"""The position floor (an honest ``unsure``) and expected calibration error."""

from __future__ import annotations

import numpy as np
import pytest

from processor.ml.confidence import choose_floor, expected_calibration_error, floor_report
from processor.model import UNSURE, Prediction


def test_below_the_floor_the_position_is_unsure() -> None:
    p = Prediction(0.1, {"front": 0.55, "side": 0.3, "other": 0.15})
    assert p.position == "front"
    assert p.position_at(0.0) == "front"
    assert p.position_at(0.55) == "front"
    assert p.position_at(0.56) == UNSURE


def test_floor_is_the_lowest_that_keeps_positions_right_often_enough() -> None:
    confidence = np.array([0.95, 0.9, 0.85, 0.6, 0.5, 0.4])
    correct = np.array([True, True, True, False, True, False])
    assert choose_floor(confidence, correct, target=0.75) == pytest.approx(0.41)  # drops the 0.4 miss: 4/5 right
    assert choose_floor(confidence, correct, target=0.9) == pytest.approx(0.61)  # only the three sure ones
    assert choose_floor(confidence, np.ones(6, bool), target=0.9) == 0.0
    report = floor_report(confidence, correct, 0.61)
    assert report["coverage"] == 0.5 and report["unsure"] == 3 and report["confident_wrong"] == 0


def test_expected_calibration_error() -> None:
    confidence = np.array([0.9] * 10 + [0.6] * 10)
    correct = np.array([True] * 9 + [False] + [True] * 3 + [False] * 7)
    # 0.9 bin: accuracy 0.9, no gap; 0.6 bin: accuracy 0.3, gap 0.3 on half the predictions
    assert expected_calibration_error(confidence, correct) == pytest.approx(0.15)
    assert expected_calibration_error(np.array([]), np.array([], bool)) == 0.0
