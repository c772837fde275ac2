"""Bytes to a model-ready uint8 array: pixel cap before decoding, DCT-scaled JPEG decode.

Runs in worker threads (the codecs release the GIL), never on the event loop.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
import simplejpeg
from numpy.typing import NDArray
from PIL import Image

from .errors import NotAnImage, TooLarge

ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "MPO"})


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """The resized pixels plus the original size."""

    pixels: NDArray[np.uint8]  # (height, width, 3) at the model's input size
    width: int
    height: int


def decode_image(data: bytes, size: tuple[int, int], max_pixels: int) -> DecodedImage:
    """Decode and resize to ``size`` (width, height); raise NotAnImage or TooLarge."""
    if data[:3] == b"\xff\xd8\xff":
        try:
            return _decode_jpeg(data, size, max_pixels)
        except TooLarge:
            raise
        except (ValueError, RuntimeError):
            pass  # CMYK, progressive oddities, truncation: Pillow decides below
    return _decode_pillow(data, size, max_pixels)


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise NotAnImage(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise TooLarge(f"image is {width}x{height} = {width * height} pixels, over the cap of {max_pixels}")


def _decode_jpeg(data: bytes, size: tuple[int, int], max_pixels: int) -> DecodedImage:
    height, width, _colorspace, _subsampling = simplejpeg.decode_jpeg_header(data)
    _check_pixels(width, height, max_pixels)
    # min_width/min_height let libjpeg-turbo decode at 1/2, 1/4 or 1/8 scale (DCT scaling).
    pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=size[0], min_height=size[1])
    return DecodedImage(_resize(pixels, size), width, height)


def _decode_pillow(data: bytes, size: tuple[int, int], max_pixels: int) -> DecodedImage:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
            if img.format not in ALLOWED_FORMATS:
                raise NotAnImage(f"unsupported image format {img.format}")
            width, height = img.size
            _check_pixels(width, height, max_pixels)
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)  # first frame of an animation
            img.draft("RGB", size)
            img.load()
            rgb = _to_rgb(img)
    except (NotAnImage, TooLarge):
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own cap (2x MAX_IMAGE_PIXELS), above ours by default
        raise TooLarge(str(exc)) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise NotAnImage(f"cannot decode image: {exc}") from None
    return DecodedImage(_resize(np.asarray(rgb, dtype=np.uint8), size), width, height)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit and float greyscale
        arr = np.asarray(img, dtype=np.float64)
        peak = float(arr.max()) or 1.0
        img = Image.fromarray((arr * (255.0 / peak)).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
        return background
    return img.convert("RGB")


def _resize(pixels: NDArray[np.uint8], size: tuple[int, int]) -> NDArray[np.uint8]:
    if pixels.shape[1] == size[0] and pixels.shape[0] == size[1]:
        return np.ascontiguousarray(pixels)
    shrinking = pixels.shape[1] > size[0]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return np.asarray(cv2.resize(pixels, size, interpolation=interpolation), dtype=np.uint8)
