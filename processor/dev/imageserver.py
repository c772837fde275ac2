"""A local aiohttp server that plays a dealer CDN: generated listing photos and failure routes.

Routes: ``/img/{name}`` (a registered image; ``?v=N`` makes its bytes unique by adding a JPEG
comment, so content-hash caching cannot shortcut benchmarks), ``/status/{code}`` (``?retry_after=S``
sets Retry-After), ``/slow/{name}`` (drips the body; ``?bytes=1&every=1``: a byte a second),
``/redirect?to=URL`` (Location sent as given, even malformed), ``/html``, ``/truncated/{name}``, ``/huge``.
Every request is counted by path, so tests can prove what was (not) downloaded.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ..ml import synth

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class ImageServer:
    """Serves ``images`` (name -> JPEG bytes); ``start()`` binds a free loopback port."""

    images: dict[str, bytes] = field(default_factory=dict)
    latency_s: float = 0.0
    jitter_s: float = 0.0
    requests: Counter[str] = field(default_factory=Counter)
    bytes_sent: int = 0  # image bytes served
    not_modified: int = 0  # conditional requests answered 304
    etags: bool = True  # False: a CDN that sends no ETag and ignores If-None-Match (benchmarks compare)
    port: int = 0
    host: str = "127.0.0.1"
    _runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, name: str) -> str:
        return f"{self.base_url}/img/{name}"

    async def start(self) -> None:
        app = web.Application(middlewares=[self._count])
        app.add_routes(
            [
                web.get("/img/{name}", self._image),
                web.get("/status/{code}", self._status),
                web.get("/slow/{name}", self._slow),
                web.get("/redirect", self._redirect),
                web.get("/html", self._html),
                web.get("/truncated/{name}", self._truncated),
                web.get("/huge", self._huge),
            ]
        )
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server: Any = site._server
        self.port = server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ImageServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @web.middleware
    async def _count(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests[request.path] += 1
        if self.latency_s or self.jitter_s:
            await asyncio.sleep(max(0.0, self.latency_s + random.uniform(-self.jitter_s, self.jitter_s)))
        return await handler(request)

    async def _image(self, request: web.Request) -> web.Response:
        data = self.images.get(request.match_info["name"])
        if data is None:
            raise web.HTTPNotFound()
        variant = request.query.get("v")
        if variant and data.startswith(b"\xff\xd8"):
            comment = variant.encode()[:1000]
            data = b"\xff\xd8\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + data[2:]
        etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'  # like a CDN: changes with the bytes
        if self.etags and etag in request.headers.get("If-None-Match", ""):
            self.not_modified += 1
            return web.Response(status=304, headers={"ETag": etag})
        self.bytes_sent += len(data)
        return web.Response(body=data, content_type="image/jpeg", headers={"ETag": etag} if self.etags else {})

    async def _status(self, request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        retry_after = request.query.get("retry_after", "0" if code == 429 else None)
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return web.Response(status=code, text=f"status {code}", headers=headers)

    async def _slow(self, request: web.Request) -> web.StreamResponse:
        data = self.images.get(request.match_info["name"], b"\xff\xd8\xff" + b"\0" * 4096)
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        await resp.prepare(request)
        chunk = int(request.query.get("bytes", "256"))  # ?bytes=1&every=1: a byte a second
        every_s = float(request.query.get("every", "0.5"))
        for i in range(0, len(data), chunk):
            await resp.write(data[i : i + chunk])
            await asyncio.sleep(every_s)
        return resp

    async def _redirect(self, request: web.Request) -> web.Response:
        # not web.HTTPFound, which parses the URL: hostile CDNs send malformed Locations too
        return web.Response(status=302, headers={"Location": request.query["to"]})

    async def _html(self, request: web.Request) -> web.Response:
        return web.Response(text="<html><body>not an image</body></html>", content_type="image/jpeg")

    async def _truncated(self, request: web.Request) -> web.Response:
        data = self.images.get(request.match_info["name"], b"")
        return web.Response(body=data[: len(data) // 3], content_type="image/jpeg")

    async def _huge(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        await resp.prepare(request)
        chunk = b"\xff\xd8\xff" + b"\0" * (1024 * 1024 - 3)
        try:
            for _ in range(1024):  # up to 1 GiB, streamed without Content-Length
                await resp.write(chunk)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return resp


@dataclass(frozen=True, slots=True)
class Listing:
    listing_id: str
    photos: list[tuple[str, str, bool]]  # (name, position, banner)


def generate_listings(
    images: int, listings: int, seed: int = 7, banner_share: float = 0.35
) -> tuple[list[Listing], dict[str, bytes]]:
    """Listing photos for the demo and benchmarks: a shuffled mix of positions, some bannered."""
    rng = random.Random(seed)
    per = [images // listings + (1 if i < images % listings else 0) for i in range(listings)]
    result, blobs = [], {}
    for li, count in enumerate(per):
        photos = []
        for k in range(count):
            position = rng.choice(synth.POSITIONS)
            banner = rng.random() < banner_share
            name = f"l{li:04d}-{k:02d}.jpg"
            img = synth.render(rng, position, banner, rng.choice(synth.SIZES[:3]))
            blobs[name] = synth.to_jpeg(img, rng.randint(70, 92))
            photos.append((name, position, banner))
        result.append(Listing(f"listing-{li:04d}", photos))
    return result, blobs
