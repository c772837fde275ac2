"""Bytes to a model-ready uint8 array, with the memory a decode takes bounded before it starts.

Runs in worker threads (the codecs release the GIL), never on the event loop.

A small file can decode into a large buffer, so the header is read first and the decode's memory
estimated from it (``plan``): the decoded image at the size Pillow stores it (4 bytes a pixel for
RGB and RGBA, 2 for 16-bit grey, 16 for WebP, whose codec makes copies), plus, for a progressive
or multi-scan JPEG, the full-size coefficient buffer libjpeg keeps until the last scan (2 bytes a
sample, even when it DCT-scales the output). Baseline JPEGs decode DCT-scaled near the model's
size and cost little. ``Decoder`` refuses an estimate over its byte budget (TooLarge) and lets only
a few large decodes run at once.

After decoding, conversion to RGB (alpha over white, 16-bit scaling, palettes) runs tile by tile,
so nothing beyond the decoded image itself is allocated at full size. An image over
``REDUCE_ABOVE_PIXELS`` is also box-reduced tile by tile to ``REDUCE_GAP`` times the model's size
before the final area resize (on photographs within 2 levels of a single area resize); smaller
ones keep the exact path the shipped model was calibrated on, bit for bit.
"""

from __future__ import annotations

import io
import threading
import warnings
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import simplejpeg
from numpy.typing import NDArray
from PIL import Image

from .errors import NotAnImage, TooLarge
from .settings import Settings

ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "MPO"})
MIB = 1024 * 1024

# Bytes a pixel as Pillow stores the mode (anything not named: 4, as RGB is stored padded to 32 bits).
STORED_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
# Peak bytes a pixel while decoding where the codec copies the image (measured): libwebp decodes into
# its own RGBA canvas and hands Pillow a copy; libtiff may read a whole uncompressed strip (up to two
# bytes a sample) before unpacking it.
CODEC_BYTES = {"WEBP": 16}
CODEC_COPIES = {"TIFF": 3}
CODEC_OVERHEAD_BYTES = 8 * MIB  # codec state and row buffers, the resized output (measured: about 7 MiB)
REDUCE_ABOVE_PIXELS = 4_000_000
REDUCE_GAP = 8  # box-reduce to at least this many times the model's size: within 2 levels of one area resize
TILE_PX = 512
TILE_BYTES_PER_PIXEL = 20  # a tile in flight: its crop, 16-bit scaling, RGB conversion, array and tobytes' copy

SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # not DHT, JPG, DAC
PROGRESSIVE_SOF = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD9)})  # TEM, RSTn, SOI: no length field
SOS = 0xDA


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """The resized pixels plus the original size."""

    pixels: NDArray[np.uint8]  # (height, width, 3) at the model's input size
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class JpegFrame:
    """What a JPEG's markers say before any pixel is decoded."""

    width: int
    height: int
    sampling: tuple[tuple[int, int], ...]  # (horizontal, vertical) factor of each component
    buffered: bool  # progressive or multi-scan: libjpeg holds every coefficient until the end


@dataclass(frozen=True, slots=True)
class Plan:
    """An image read as far as its header: format, size and the memory its decode will take."""

    format: str
    width: int
    height: int
    estimated_bytes: int
    jpeg: JpegFrame | None = None
    image: Image.Image | None = field(default=None, repr=False, compare=False)  # opened lazily by Pillow


class Decoder:
    """Decodes within a memory budget; create once per worker and call ``decode`` from its threads.

    An image whose estimated decode is over ``max_bytes`` is TooLarge; one over ``large_bytes``
    waits for one of ``large_slots``, so a burst of large images cannot multiply the peak by the
    number of decode threads. ``None`` turns either bound off.
    """

    def __init__(
        self, max_pixels: int, max_bytes: int | None = None, large_bytes: int | None = None, large_slots: int = 1
    ) -> None:
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes
        self.large_bytes = large_bytes
        self._large = threading.BoundedSemaphore(large_slots)

    @classmethod
    def from_settings(cls, settings: Settings) -> Decoder:
        """The worker's decoder: pixel cap, decode budget and large-decode slots from the settings."""
        return cls(
            settings.max_image_pixels,
            settings.max_decode_bytes,
            settings.large_decode_bytes,
            settings.large_decode_slots,
        )

    def decode(self, data: bytes, size: tuple[int, int]) -> DecodedImage:
        """Decode and resize to ``size`` (width, height); raise NotAnImage or TooLarge."""
        planned = plan(data, size)
        _check_pixels(planned.width, planned.height, self.max_pixels)
        if self.max_bytes is not None and planned.estimated_bytes > self.max_bytes:
            raise TooLarge(
                f"decoding this {planned.width}x{planned.height} {planned.format} would take about "
                f"{planned.estimated_bytes // MIB} MiB, over the {self.max_bytes // MIB} MiB decode budget"
            )
        with self._slot(planned):
            return _run(data, planned, size)

    def _slot(self, planned: Plan) -> threading.BoundedSemaphore | nullcontext[None]:
        if self.large_bytes is not None and planned.estimated_bytes > self.large_bytes:
            return self._large
        return nullcontext()


def decode_image(data: bytes, size: tuple[int, int], max_pixels: int, max_bytes: int | None = None) -> DecodedImage:
    """Decode and resize to ``size`` (width, height); raise NotAnImage or TooLarge. No slots: see Decoder."""
    return Decoder(max_pixels, max_bytes).decode(data, size)


def plan(data: bytes, size: tuple[int, int]) -> Plan:
    """Read the header and estimate the decode's memory; raise NotAnImage."""
    frame = jpeg_frame(data) if data[:3] == b"\xff\xd8\xff" else None
    if frame is not None:
        return Plan("JPEG", frame.width, frame.height, _jpeg_bytes(frame, size), jpeg=frame)
    img = _open(data)
    width, height = img.size
    return Plan(str(img.format), width, height, _pillow_bytes(img, size), image=img)


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise NotAnImage(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise TooLarge(f"image is {width}x{height} = {width * height} pixels, over the cap of {max_pixels}")


def _run(data: bytes, planned: Plan, size: tuple[int, int]) -> DecodedImage:
    if planned.jpeg is not None:
        try:  # min_width/min_height let libjpeg-turbo decode at 1/8 to 8/8 scale (DCT scaling)
            pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=size[0], min_height=size[1])
            return DecodedImage(_resize(pixels, size), planned.width, planned.height)
        except (ValueError, RuntimeError):
            pass  # CMYK, progressive oddities, truncation: Pillow decides below
    img = planned.image if planned.image is not None else _open(data)
    return DecodedImage(_resize(_decode_pillow(img, size), size), planned.width, planned.height)


# --- header reading and estimates ---------------------------------------------------------------


def jpeg_frame(data: bytes) -> JpegFrame | None:
    """The frame header (SOFn) and whether the first scan holds every component; None if unreadable."""
    pos, sof = 2, None
    # Like libjpeg, skip stray bytes between segments: a decoder that tolerates them must not hide a frame.
    while (pos := data.find(b"\xff", pos)) != -1 and pos + 4 <= len(data):
        marker = data[pos + 1]
        if marker == 0xFF or marker in STANDALONE_MARKERS:  # fill byte or a marker without a length
            pos += 1 if marker == 0xFF else 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        body = data[pos + 4 : pos + 2 + length]
        if marker in SOF_MARKERS:
            sof = (marker, body)
        elif marker == SOS:
            return _frame(sof, scan_components=body[0] if body else 0)
        pos += 2 + length
    return None


def _frame(sof: tuple[int, bytes] | None, scan_components: int) -> JpegFrame | None:
    if sof is None or len(sof[1]) < 6:
        return None
    marker, body = sof
    count = body[5]
    if count == 0 or len(body) < 6 + 3 * count:
        return None
    sampling = tuple((body[7 + 3 * i] >> 4, body[7 + 3 * i] & 0x0F) for i in range(count))
    buffered = marker in PROGRESSIVE_SOF or scan_components < count
    return JpegFrame(int.from_bytes(body[3:5], "big"), int.from_bytes(body[1:3], "big"), sampling, buffered)


def coefficient_bytes(frame: JpegFrame) -> int:
    """libjpeg's whole-image coefficient buffer: 64 two-byte coefficients per 8x8 block of each component."""
    h_max = max(max(h for h, _ in frame.sampling), 1)
    v_max = max(max(v for _, v in frame.sampling), 1)
    blocks = sum(
        _ceil_div(_ceil_div(frame.width * h, h_max), 8) * _ceil_div(_ceil_div(frame.height * v, v_max), 8)
        for h, v in frame.sampling
    )
    return blocks * 64 * 2


def _jpeg_bytes(frame: JpegFrame, size: tuple[int, int]) -> int:
    # The output is DCT-scaled; Pillow's draft (the fallback) scales by powers of two only, so count that.
    scale = _draft_scale(frame.width, frame.height, size)
    output = _ceil_div(frame.width, scale) * _ceil_div(frame.height, scale) * 4
    coefficients = coefficient_bytes(frame) if frame.buffered else 0
    return coefficients + output + CODEC_OVERHEAD_BYTES


def _draft_scale(width: int, height: int, size: tuple[int, int]) -> int:
    ratio = min(width // size[0], height // size[1])
    return next(a for a in (8, 4, 2, 1) if ratio >= a or a == 1)


def _pillow_bytes(img: Image.Image, size: tuple[int, int]) -> int:
    width, height = img.size
    fmt = str(img.format)
    per_pixel = CODEC_BYTES.get(fmt) or STORED_BYTES.get(img.mode, 4) * CODEC_COPIES.get(fmt, 1)
    fx, fy = _reduce_factors(width, height, size)
    output = _ceil_div(width, fx) * _ceil_div(height, fy) * 6  # the RGB array, and tobytes' copy as it is made
    tile = min(width * height, TILE_PX * TILE_PX) * TILE_BYTES_PER_PIXEL
    return width * height * per_pixel + output + tile + CODEC_OVERHEAD_BYTES


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# --- decoding through Pillow --------------------------------------------------------------------


def _open(data: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:  # Pillow's own cap (2x MAX_IMAGE_PIXELS), above ours by default
        raise TooLarge(str(exc)) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise NotAnImage(f"cannot decode image: {exc}") from None
    if img.format not in ALLOWED_FORMATS:
        raise NotAnImage(f"unsupported image format {img.format}")
    return img


def _decode_pillow(img: Image.Image, size: tuple[int, int]) -> NDArray[np.uint8]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)  # first frame of an animation
            img.draft("RGB", size)
            img.load()
            return _to_rgb_reduced(img, size)
    except (OSError, ValueError, SyntaxError) as exc:
        raise NotAnImage(f"cannot decode image: {exc}") from None


def _reduce_factors(width: int, height: int, size: tuple[int, int]) -> tuple[int, int]:
    """Box-reduction factors that keep ``REDUCE_GAP`` times ``size``; (1, 1) where the exact path is affordable."""
    if width * height <= REDUCE_ABOVE_PIXELS:
        return 1, 1
    return max(1, width // (REDUCE_GAP * size[0])), max(1, height // (REDUCE_GAP * size[1]))


def _to_rgb_reduced(img: Image.Image, size: tuple[int, int]) -> NDArray[np.uint8]:
    """RGB pixels, converted and box-reduced tile by tile: no full-size copy of the image."""
    width, height = img.size
    fx, fy = _reduce_factors(width, height, size)
    peak = _peak(img)
    one_tile = width <= TILE_PX and height <= TILE_PX
    if one_tile or (img.mode == "RGB" and (fx, fy) == (1, 1)):  # nothing to crop, or nothing to convert
        return np.asarray(_tile_rgb(img, peak), dtype=np.uint8)
    out = np.empty((_ceil_div(height, fy), _ceil_div(width, fx), 3), np.uint8)
    for left, top, tile in _tiles(img, max(fx, TILE_PX // fx * fx), max(fy, TILE_PX // fy * fy)):
        rgb = _tile_rgb(tile, peak)
        if fx > 1 or fy > 1:
            rgb = rgb.reduce((fx, fy))
        out[top // fy : top // fy + rgb.height, left // fx : left // fx + rgb.width] = np.asarray(rgb)
    return out


def _tiles(img: Image.Image, tile_w: int, tile_h: int) -> Iterator[tuple[int, int, Image.Image]]:
    width, height = img.size
    for top in range(0, height, tile_h):
        for left in range(0, width, tile_w):
            yield left, top, img.crop((left, top, min(left + tile_w, width), min(top + tile_h, height)))


def _peak(img: Image.Image) -> float | None:
    """The brightest value of a 16-bit, 32-bit or float greyscale image (scaled to 0-255); None for others."""
    if img.mode not in ("I", "F") and not img.mode.startswith("I;16"):
        return None
    low_high = img.getextrema()
    high = float(low_high[1]) if isinstance(low_high[1], int | float) else 0.0
    return high if high > 0 else 1.0


def _tile_rgb(tile: Image.Image, peak: float | None) -> Image.Image:
    if peak is not None:
        tile = Image.fromarray(_scale_to_uint8(np.asarray(tile), peak))
    if tile.mode in ("RGBA", "LA", "PA") or (tile.mode == "P" and "transparency" in tile.info):
        rgba = tile.convert("RGBA")
        background = Image.new("RGB", tile.size, (255, 255, 255))
        background.paste(rgba, mask=rgba)  # alpha over white
        return background
    return tile if tile.mode == "RGB" else tile.convert("RGB")


def _scale_to_uint8(values: NDArray[np.generic], peak: float) -> NDArray[np.uint8]:
    """Scale so that ``peak`` becomes 255, in place in one wider copy: integers for integer samples."""
    wide: NDArray[Any]
    if values.dtype.kind == "u" and values.dtype.itemsize <= 2:
        wide = values.astype(np.uint32)  # 65535 * 255 still fits
        wide *= 255
        wide //= max(int(peak), 1)
    elif values.dtype.kind in "iu":
        wide = values.astype(np.int64)
        wide *= 255
        wide //= max(int(peak), 1)
    else:
        wide = values.astype(np.float32)
        wide *= np.float32(255.0 / peak)
    np.clip(wide, 0, 255, out=wide)
    return wide.astype(np.uint8)


def _resize(pixels: NDArray[np.uint8], size: tuple[int, int]) -> NDArray[np.uint8]:
    if pixels.shape[1] == size[0] and pixels.shape[0] == size[1]:
        return np.ascontiguousarray(pixels)
    shrinking = pixels.shape[1] > size[0]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return np.asarray(cv2.resize(pixels, size, interpolation=interpolation), dtype=np.uint8)
