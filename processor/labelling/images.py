"""Images for the labelling pages: fetched server-side with the SSRF-safe Fetcher, re-encoded, cached.

The browser only ever loads ``/image?id=...`` from the app itself. Re-encoding to a fresh JPEG
means that whatever the source sent (HTML, SVG with script, a polyglot) never reaches the page.
"""

from __future__ import annotations

import asyncio
import io
from collections import OrderedDict
from pathlib import Path
from urllib.parse import unquote, urlsplit

import asyncpg
from PIL import Image, UnidentifiedImageError

from ..errors import BlockedUrl, FetchFailed, NotAnImage, TooLarge
from ..fetch import Fetcher
from ..settings import Settings

ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "MPO"})
JPEG_QUALITY = 88
FULL_PX = 4096  # longest side of the zoomed view (the photo's own size when smaller)


def to_display_jpeg(data: bytes, longest_px: int, max_pixels: int) -> bytes:
    """A JPEG of at most ``longest_px`` on its longest side; raise NotAnImage or TooLarge."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format not in ALLOWED_FORMATS:
                raise NotAnImage(f"not an allowed image format: {img.format}")
            width, height = img.size
            if width * height > max_pixels:
                raise TooLarge(f"image is {width}x{height} pixels, over the cap of {max_pixels}")
            img.draft("RGB", (longest_px, longest_px))  # JPEG: decode at a reduced scale when it can
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise NotAnImage(f"cannot decode the image: {exc}") from None
    rgb.thumbnail((longest_px, longest_px))
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def image_format(data: bytes, max_pixels: int) -> str:
    """The format of image bytes (e.g. "JPEG"), checked like ``to_display_jpeg`` checks; for exports."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if img.format not in ALLOWED_FORMATS:
                raise NotAnImage(f"not an allowed image format: {img.format}")
            if width * height > max_pixels:
                raise TooLarge(f"image is {width}x{height} pixels, over the cap of {max_pixels}")
            img.verify()
            return str(img.format)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise NotAnImage(f"cannot decode the image: {exc}") from None


def local_path(url: str, allowed: list[Path]) -> Path:
    """The file a ``file:`` URL names, if it lies under an allowed folder; raise BlockedUrl otherwise."""
    path = Path(unquote(urlsplit(url).path)).resolve()
    if not any(path.is_relative_to(folder) for folder in allowed):
        raise BlockedUrl("that file is not under a folder imported into the labelling app")
    return path


class ImageProxy:
    """Fetches, re-encodes and keeps the last ``cache_items`` images in memory; ``start()``, ``close()``.

    ``file:`` URLs (from ``processor label import``) are read from disk, only under the folders an
    import registered in ``pool``.
    """

    def __init__(self, settings: Settings, cache_items: int, longest_px: int, pool: asyncpg.Pool | None = None) -> None:
        self._pool = pool
        self._settings = settings
        self._fetcher = Fetcher(settings)
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cache_items = cache_items
        self._longest_px = longest_px

    async def start(self) -> None:
        await self._fetcher.start()

    async def close(self) -> None:
        await self._fetcher.close()

    async def fetch_original(self, url: str) -> bytes:
        """The source bytes, as the Fetcher allows (raise a ProcessorError subclass)."""
        if url.startswith("file:"):
            return await self._read_local(url)
        return (await self._fetcher.fetch(url)).data

    async def _read_local(self, url: str) -> bytes:
        from .importing import image_dirs

        path = local_path(url, await image_dirs(self._pool) if self._pool is not None else [])
        try:
            size = path.stat().st_size
            if size > self._settings.max_image_bytes:
                raise TooLarge(f"file is {size} bytes, over the cap of {self._settings.max_image_bytes}")
            return await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            raise FetchFailed(f"cannot read the imported file: {exc.strerror}") from None

    async def display(self, url: str, full: bool = False) -> bytes:
        """A display JPEG of the image at ``url``, or at full resolution up to FULL_PX for the zoom (raise a
        ProcessorError subclass)."""
        key = f"full:{url}" if full else url
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        data = await self.fetch_original(url)
        longest = FULL_PX if full else self._longest_px
        jpeg = await asyncio.to_thread(to_display_jpeg, data, longest, self._settings.max_image_pixels)
        if self._cache_items:
            self._cache[key] = jpeg
            while len(self._cache) > self._cache_items:
                self._cache.popitem(last=False)
        return jpeg
