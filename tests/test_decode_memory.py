"""Decode memory, measured: small files with large dimensions must not cost many times their pixels.

Codec buffers are C allocations that tracemalloc cannot see, so each decode runs in a fresh
subprocess that resets its peak resident set (``/proc/self/clear_refs``) and reports how far the
peak rose above the resident set during the decode, with the estimate ``plan`` made from the
header, which must not be below what was measured. (``ru_maxrss`` would not do: a child inherits
its parent's peak through fork and exec.)
"""

from __future__ import annotations

import io
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

PROBE = """
import sys
from processor.decode import decode_image, plan

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))

data = sys.stdin.buffer.read()
estimate = plan(data, (160, 160)).estimated_bytes
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak starts again from the resident set now
before = status("VmRSS")
decode_image(data, (160, 160), 10**9)
print(status("VmHWM") - before, estimate)
"""

pytestmark = pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
SIDE = 5000  # 25 megapixels: under the default pixel cap, like the 49-megapixel files of issue #12


def peak_growth(data: bytes) -> tuple[int, int]:
    """(peak RSS growth while decoding, planned estimate), in bytes, from a fresh interpreter."""
    done = subprocess.run([sys.executable, "-c", PROBE], input=data, capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    grown, estimate = done.stdout.split()
    return int(grown), int(estimate)


def png(width: int, height: int, bit_depth: int, colour_type: int, channels: int) -> bytes:
    """A PNG of mostly zeros (one patterned row): a few hundred KB for tens of megapixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    row_bytes = width * channels * bit_depth // 8
    squeeze = zlib.compressobj(9)
    first = bytes(range(256)) * (row_bytes // 256) + bytes(row_bytes % 256)
    body = [squeeze.compress(b"\x00" + first)]
    zero_row = b"\x00" + bytes(row_bytes)
    body += [squeeze.compress(zero_row) for _ in range(height - 1)] + [squeeze.flush()]
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([bit_depth, colour_type, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(body)) + chunk(b"IEND", b"")


# bound: peak bytes per pixel allowed; before issue #12 these cost about 18, 16 and 13.5 bytes a pixel
@pytest.mark.parametrize(
    "name,make,bound",
    [
        ("16-bit grey PNG", lambda: png(SIDE, SIDE, 16, 0, 1), 3.0),  # stored at 2 bytes a pixel
        ("RGBA PNG", lambda: png(SIDE, SIDE, 8, 6, 4), 5.0),  # stored at 4
        ("RGB PNG", lambda: png(SIDE, SIDE, 8, 2, 3), 5.0),  # stored at 4 (padded)
    ],
)
def test_small_files_with_large_dimensions_decode_within_their_stored_size(
    name: str, make: Callable[[], bytes], bound: float
) -> None:
    data = make()
    assert len(data) < 400_000, name
    grown, estimate = peak_growth(data)
    assert grown < bound * SIDE * SIDE, f"{name}: {grown / 2**20:.0f} MiB"
    assert grown <= estimate, f"{name}: estimate {estimate / 2**20:.0f} MiB below {grown / 2**20:.0f} MiB"


def encoded(fmt: str, size: tuple[int, int], **options: object) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (120, 130, 140)).save(buf, fmt, **options)
    return buf.getvalue()


def progressive_jpeg(side: int) -> bytes:
    ok, buf = cv2.imencode(
        ".jpg",
        np.full((side, side, 3), 128, np.uint8),
        [cv2.IMWRITE_JPEG_PROGRESSIVE, 1, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444],
    )
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize(
    "name,make",
    [
        ("progressive 4:4:4 JPEG", lambda: progressive_jpeg(3000)),  # the coefficient buffer: 6 bytes a pixel
        ("WebP", lambda: encoded("WEBP", (2000, 2000), quality=50)),  # libwebp's copies: 16 bytes a pixel
        ("single-strip TIFF", lambda: encoded("TIFF", (2000, 2000), compression="tiff_lzw", strip_size=12_000_000)),
    ],
)
def test_the_estimate_covers_what_codecs_allocate(name: str, make: Callable[[], bytes]) -> None:
    grown, estimate = peak_growth(make())
    assert grown <= estimate, f"{name}: estimate {estimate / 2**20:.0f} MiB below {grown / 2**20:.0f} MiB"
