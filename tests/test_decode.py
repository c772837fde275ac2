"""Decoding: formats, colour modes, caps and broken bodies."""

from __future__ import annotations

import io
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from processor import decode
from processor.decode import Decoder, coefficient_bytes, decode_image, jpeg_frame, plan
from processor.errors import NotAnImage, TooLarge
from processor.settings import Settings

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


def jpeg_header(width: int, height: int, sof: int, sampling: list[int], scan_components: int | None = None) -> bytes:
    """SOI, APP0, SOFn and SOS markers and no pixels: all that planning a decode reads."""

    def segment(marker: int, body: bytes) -> bytes:
        return bytes([0xFF, marker]) + (len(body) + 2).to_bytes(2, "big") + body

    components = b"".join(bytes([i + 1, factors, 0]) for i, factors in enumerate(sampling))
    frame = bytes([8]) + height.to_bytes(2, "big") + width.to_bytes(2, "big") + bytes([len(sampling)]) + components
    scanned = len(sampling) if scan_components is None else scan_components
    scan = bytes([scanned]) + b"".join(bytes([i + 1, 0]) for i in range(scanned)) + bytes([0, 63, 0])
    app0 = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    return b"\xff\xd8" + segment(0xE0, app0) + segment(sof, frame) + segment(0xDA, scan)


BASELINE, PROGRESSIVE = 0xC0, 0xC2
S420, S444 = [0x22, 0x11, 0x11], [0x11, 0x11, 0x11]


def test_jpeg_frame_reads_size_sampling_and_scans(photo: Image.Image) -> None:
    frame = jpeg_frame(encode(photo, "JPEG", progressive=True, subsampling=2))
    assert frame is not None and (frame.width, frame.height) == (640, 480)
    assert frame.buffered and frame.sampling == ((2, 2), (1, 1), (1, 1))
    baseline = jpeg_frame(encode(photo, "JPEG", subsampling=0))
    assert baseline is not None and not baseline.buffered and baseline.sampling == ((1, 1),) * 3
    header = jpeg_header(7000, 7000, PROGRESSIVE, S444)
    stray = header.replace(b"\xff\xc2", b"\x00\x00\xff\xc2")  # libjpeg skips stray bytes before a marker
    assert jpeg_frame(stray) == jpeg_frame(header)
    multi_scan = jpeg_frame(jpeg_header(6000, 4000, BASELINE, S420, scan_components=1))
    assert multi_scan is not None and multi_scan.buffered  # components in separate scans: buffered too
    assert jpeg_frame(b"\xff\xd8\xff\xe0garbage") is None


def test_coefficient_buffer_counts_every_block_of_every_component() -> None:
    frame = jpeg_frame(jpeg_header(7000, 7000, PROGRESSIVE, S444))
    assert frame is not None and coefficient_bytes(frame) == 875 * 875 * 64 * 2 * 3
    subsampled = jpeg_frame(jpeg_header(6000, 4000, PROGRESSIVE, S420))
    assert subsampled is not None and coefficient_bytes(subsampled) == (750 * 500 + 2 * 375 * 250) * 128


def test_default_budget_admits_24_megapixel_jpegs() -> None:
    settings = Settings()
    for sof, sampling in [(BASELINE, S444), (PROGRESSIVE, S420), (PROGRESSIVE, S444)]:
        assert plan(jpeg_header(6000, 4000, sof, sampling), SIZE).estimated_bytes < settings.max_decode_bytes
    baseline = plan(jpeg_header(6000, 4000, BASELINE, S444), SIZE)
    assert baseline.estimated_bytes < settings.large_decode_bytes  # DCT-scaled: not even a large decode


def test_over_budget_progressive_jpeg_is_too_large_before_decoding() -> None:
    # a 7000x7000 4:4:4 progressive JPEG needs a 280 MiB coefficient buffer, whatever the output scale
    header = jpeg_header(7000, 7000, PROGRESSIVE, S444)
    with pytest.raises(TooLarge, match="decode budget"):
        Decoder.from_settings(Settings()).decode(header, SIZE)


def grey16_png(width: int, height: int) -> bytes:
    """A 16-bit greyscale PNG with a gradient row: a few KB on the wire, 2 bytes a pixel decoded."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    squeeze = zlib.compressobj(9)
    row = np.linspace(0, 40_000, width).astype(">u2").tobytes()
    body = [squeeze.compress(b"\x00" + row) for _ in range(height)] + [squeeze.flush()]
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([16, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(body)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("width,height", [(300, 200), (3000, 2000)])  # the exact path and the reduced path
def test_16_bit_grey_is_scaled_by_its_peak(width: int, height: int) -> None:
    out = decode_image(grey16_png(width, height), SIZE, 10**8)
    assert (out.width, out.height) == (width, height)
    left, right = int(out.pixels[:, 0].mean()), int(out.pixels[:, -1].mean())
    assert left < 5 and right > 250  # 0 .. 40000 spread over 0 .. 255


def test_large_image_is_reduced_in_tiles_like_a_whole_reduce(photo: Image.Image) -> None:
    big = photo.resize((3001, 2001))  # several tiles, and a last column of boxes one pixel wide
    rgba = big.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(big.size))
    for img in (big, rgba, big.convert("P"), big.convert("L")):
        fx, fy = decode._reduce_factors(*img.size, SIZE)
        assert (fx, fy) == (2, 1)  # keeps at least REDUCE_GAP times SIZE
        expected = np.asarray(decode._tile_rgb(img, None).reduce((fx, fy)))
        np.testing.assert_array_equal(decode._to_rgb_reduced(img, SIZE), expected)


def test_large_decodes_wait_for_a_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    small = encode(Image.new("RGB", (64, 64), (10, 20, 30)), "PNG")
    large = encode(Image.new("RGB", (2000, 2000), (10, 20, 30)), "PNG")
    threshold = (plan(small, SIZE).estimated_bytes + plan(large, SIZE).estimated_bytes) // 2
    decoder = Decoder(10**8, large_bytes=threshold, large_slots=1)
    running = {"large": 0, "all": 0}
    peaks = {"large": 0, "all": 0}
    lock = threading.Lock()
    original: Callable[..., decode.DecodedImage] = decode._run

    def observed(data: bytes, planned: decode.Plan, size: tuple[int, int]) -> decode.DecodedImage:
        kinds = ("all", "large") if planned.estimated_bytes > threshold else ("all",)
        with lock:
            for kind in kinds:
                running[kind] += 1
                peaks[kind] = max(peaks[kind], running[kind])
        try:
            time.sleep(0.05)
            return original(data, planned, size)
        finally:
            with lock:
                for kind in kinds:
                    running[kind] -= 1

    monkeypatch.setattr(decode, "_run", observed)
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(decoder.decode, [large, small] * 6, [SIZE] * 12))
    assert all(r.pixels.shape == (128, 128, 3) for r in results)
    assert peaks["large"] == 1 and peaks["all"] > 1  # large ones one at a time; small ones alongside
