"""Decoding: formats, colour modes, caps and broken bodies."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from processor.decode import decode_image
from processor.errors import NotAnImage, TooLarge

SIZE = (128, 128)


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    "mode,fmt",
    [
        ("RGB", "JPEG"),
        ("CMYK", "JPEG"),
        ("L", "JPEG"),
        ("RGB", "PNG"),
        ("RGBA", "PNG"),
        ("P", "PNG"),
        ("I;16", "PNG"),
        ("L", "PNG"),
        ("RGB", "WEBP"),
        ("RGB", "BMP"),
        ("P", "GIF"),
    ],
)
def test_modes_and_formats_are_classified_not_crashed(photo: Image.Image, mode: str, fmt: str) -> None:
    img = photo.convert("L").convert("I;16") if mode == "I;16" else photo.convert(mode)
    out = decode_image(encode(img, fmt), SIZE, 10**8)
    assert out.pixels.shape == (128, 128, 3) and out.pixels.dtype == np.uint8
    assert (out.width, out.height) == (640, 480)


def test_animated_gif_uses_first_frame(photo: Image.Image) -> None:
    frames = [photo.convert("P"), photo.rotate(90).convert("P")]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert decode_image(data, SIZE, 10**8).pixels.shape == (128, 128, 3)


def test_pixel_cap_is_checked_from_the_header(photo: Image.Image) -> None:
    with pytest.raises(TooLarge):
        decode_image(encode(photo, "JPEG"), SIZE, 640 * 480 - 1)


def test_png_decompression_bomb_is_refused_before_decoding() -> None:
    # a 20000x20000 greyscale PNG: a few hundred KB on the wire, 400 MB once decoded
    width = height = 20_000
    raw = zlib.compress(b"".join(b"\x00" + bytes(width) for _ in range(height)), 9)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")
    assert len(png) < 1_000_000
    with pytest.raises(TooLarge):
        decode_image(png, SIZE, 50_000_000)


@pytest.mark.parametrize("body", [b"", b"<html><body>hi</body></html>", b"\xff\xd8\xff\xe0garbage", b"GIF89a"])
def test_not_images(body: bytes) -> None:
    with pytest.raises(NotAnImage):
        decode_image(body, SIZE, 10**8)


def test_truncated_jpeg_is_not_an_image(photo: Image.Image) -> None:
    data = encode(photo, "JPEG", quality=90)
    with pytest.raises(NotAnImage):
        decode_image(data[: len(data) // 2], SIZE, 10**8)
