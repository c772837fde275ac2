"""Model architectures: the compact two-head CNN trained from scratch, and frozen ImageNet backbones."""

from __future__ import annotations

from typing import Any

BACKBONES = ("cnn", "efficientnet-lite0", "mobilenetv3small")  # cnn: from scratch; others: ImageNet transfer

# (filters, stride) of the depthwise-separable blocks: 0.14 M parameters, ~0.65x the speed of the
# 5-block version this replaced, which generalized worse to unseen photographs.
BLOCKS = ((48, 2), (64, 1), (96, 2), (96, 1), (128, 2), (128, 1), (192, 2), (256, 1))


def build_model(positions: tuple[str, ...], input_size: tuple[int, int]) -> Any:
    """A compact depthwise-separable CNN with a banner head and a position head."""
    import keras
    from keras import layers

    inputs = keras.Input((input_size[1], input_size[0], 3), dtype="uint8", name="image")
    x = layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    x = layers.Conv2D(24, 3, strides=2, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU(6.0)(x)
    for filters, stride in BLOCKS:
        x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU(6.0)(x)
        x = layers.Conv2D(filters, 1, use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU(6.0)(x)
    # A banner is a local thing (a strip, a badge): max pooling keeps it; average keeps the scene.
    pooled = layers.Concatenate()([layers.GlobalAveragePooling2D()(x), layers.GlobalMaxPooling2D()(x)])
    pooled = layers.Dropout(0.2)(pooled)
    banner = layers.Dense(1, activation="sigmoid", name="banner")(pooled)
    position = layers.Dense(len(positions), activation="softmax", name="position")(pooled)
    return keras.Model(inputs, {"banner": banner, "position": position}, name="listing_image_cnn")


def build_backbone(name: str, input_size: int, weights: str | None = None) -> Any:
    """A frozen ImageNet feature extractor taking uint8 RGB: the offline EfficientNet-Lite0 port, or a
    Keras application (``weights``: "imagenet" to download, or a local weights file)."""
    import keras
    from keras import layers

    inputs = keras.Input((input_size, input_size, 3), dtype="uint8", name="image")
    if name == "efficientnet-lite0":
        from . import backbone

        lite = backbone.load()
        features = keras.Model(lite.input, lite.get_layer("avg_pool").output, name="efficientnet_lite0_features")
        x = layers.Rescaling(1 / 128.0, offset=-127.0 / 128.0)(inputs)  # backbone.preprocess
        if input_size != backbone.INPUT_SIZE:
            x = layers.Resizing(backbone.INPUT_SIZE, backbone.INPUT_SIZE)(x)
    elif name == "mobilenetv3small":
        features = keras.applications.MobileNetV3Small(
            input_shape=(input_size, input_size, 3),
            include_top=False,
            pooling="avg",
            weights=weights or "imagenet",
            include_preprocessing=True,
        )
        x = layers.Rescaling(1.0)(inputs)  # uint8 -> float; the application scales 0-255 itself
    else:
        raise ValueError(f"unknown backbone {name!r}; choose from {BACKBONES}")
    features.trainable = False
    return keras.Model(inputs, features(x, training=False), name=f"{name}_features")
