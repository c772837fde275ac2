"""Remote inference: the worker's micro-batches scored by a shared model server (``PROCESSOR_INFERENCE_URL``).

The server speaks the Open Inference Protocol (KServe v2): Triton (``processor serve-model``, or NVIDIA's
image over a repository from ``processor export-triton``), KServe, Seldon MLServer. Each batch goes as
one v2 request, the uint8 pixels as binary tensor data (not JSON lists), through tritonclient's asyncio
clients (``http://`` or ``grpc://``).

An outage of the server is not an error of the events in it. A request that fails (refused, timed out,
any server error) is retried with exponential backoff (tenacity) without end; after
``inference_breaker_failures`` failures in a row the circuit opens: requests stop, and one probe every
``inference_breaker_reset_s`` asks whether the server is back (half-open). Meanwhile the events wait in
their batches, unacknowledged: none is dead-lettered or lost, and the backlog drains once the server
answers. ``/readyz`` and ``processor_model_server_*`` show the state. A misconfiguration (a wrong model
name) stalls the worker the same way, as storage failures do, rather than dead-lettering every event.

Results name the model the server answered with: the response's model version is looked up in the
model's ``config.pbtxt`` parameters (``model_metadata:<N>``, see ``processor.serving.repository``), so
during a rollout each result names the version that scored it.

Each event keeps the model it started with: the pipeline pins an event to the newest version this worker
knew when the event started (``pinned()``: its cache key and decode size are that version's), and a
batch goes out as one request per pinned version, to ``/v2/models/<model>/versions/<N>/infer``. While a
rollout loads a new version the old one stays served (``version_policy: latest 2``), so events already
under way finish on it. Only when the server no longer has that version ready (unloaded after two more
promotions, or a restarted server that serves only the active model) does the request go to the newest
version instead, and the result names that one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import cv2
import numpy as np
from numpy.typing import NDArray
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential, wait_random

from . import metrics
from .errors import ModelError
from .model import Classifier, ModelInfo, Prediction
from .serving.repository import METADATA_PREFIX, Served
from .settings import Settings

log = logging.getLogger(__name__)


class ServerUnavailable(Exception):
    """The model server did not answer this request (or answered with an error): wait and retry."""


class CircuitOpen(ServerUnavailable):
    """The circuit is open: no request until the next probe."""


class ServedModel(Classifier):
    """A model version as the server runs it: what a result names. It scores nothing itself."""

    def __init__(self, info: ModelInfo, generation: int, banner_threshold: float | None = None) -> None:
        self.info = info
        self.generation = generation
        self.banner_threshold = info.banner_threshold if banner_threshold is None else banner_threshold
        self.runtime = "remote"

    def predict(self, images: list[NDArray[np.uint8]]) -> list[Prediction]:
        raise ModelError("a served model is scored by the model server (RemoteClassifier.infer)")


class CircuitBreaker:
    """Closed → open after ``threshold`` failures in a row → one probe after ``reset_s`` (half-open)
    → closed on its success, open again on its failure."""

    def __init__(self, threshold: int, reset_s: float, on_change: Callable[[str], None] | None = None) -> None:
        self.threshold = threshold
        self.reset_s = reset_s
        self.state = "closed"
        self.failures = 0
        self._opened_at = 0.0
        self._probing = False
        self._on_change = on_change

    def _set(self, state: str) -> None:
        if state != self.state:
            if state == "closed" or self.state == "closed":  # probes that fail again are not news
                log.warning("model server circuit %s -> %s", self.state, state)
            self.state = state
            if self._on_change is not None:
                self._on_change(state)

    def before(self) -> bool:
        """May a request go now? True for a probe too (``after`` must follow); raises CircuitOpen if not."""
        if self.state == "closed":
            return False
        if self._probing or (self.state == "open" and time.monotonic() - self._opened_at < self.reset_s):
            raise CircuitOpen("circuit open")
        self._probing = True
        self._set("half_open")
        return True

    def release(self) -> None:
        """A probe that ended without an answer (cancelled): the next request probes instead."""
        self._probing = False

    def after(self, ok: bool, probe: bool) -> None:
        if probe:
            self._probing = False
        if ok:
            self.failures = 0
            self._set("closed")
            return
        self.failures += 1
        if probe or self.failures >= self.threshold:
            self._opened_at = time.monotonic()
            self._set("open")


def _endpoint(url: str) -> tuple[str, str]:
    """(protocol, host:port) of ``http://host:port`` or ``grpc://host:port``."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "grpc"):
        raise ValueError(f"inference_url {url!r}: http://host:port or grpc://host:port")
    default = 8001 if parts.scheme == "grpc" else 8000
    return parts.scheme, f"{parts.hostname}:{parts.port or default}"


class _Client:
    """The few v2 calls the worker makes, over tritonclient's asyncio HTTP or gRPC client."""

    def __init__(self, url: str, connections: int) -> None:
        self.protocol, self.address = _endpoint(url)
        if self.protocol == "grpc":
            import tritonclient.grpc.aio as grpcclient

            self._lib: Any = grpcclient
            self._client: Any = grpcclient.InferenceServerClient(self.address)
        else:
            import tritonclient.http.aio as httpclient

            self._lib = httpclient
            self._client = httpclient.InferenceServerClient(self.address, conn_limit=connections)

    async def infer(self, model: str, batch: NDArray[np.uint8], version: str | None = None) -> tuple[str, Any]:
        """One v2 request; ``version`` None: the newest version the server has ready."""
        tensor = self._lib.InferInput("image", list(batch.shape), "UINT8")
        outputs = [self._lib.InferRequestedOutput(name) for name in ("banner", "position")]
        if self.protocol == "http":
            tensor.set_data_from_numpy(batch, binary_data=True)
            outputs = [self._lib.InferRequestedOutput(name, binary_data=True) for name in ("banner", "position")]
        else:
            tensor.set_data_from_numpy(batch)
        # The caller's asyncio.timeout bounds it.
        result = await self._client.infer(model, [tensor], model_version=version or "", outputs=outputs)
        response = result.get_response()
        version = response["model_version"] if isinstance(response, dict) else response.model_version
        return str(version), result

    async def ready(self, model: str) -> bool:
        return bool(await self._client.is_server_ready()) and bool(await self._client.is_model_ready(model))

    async def versions(self, model: str) -> list[str]:
        """The versions the server has ready for ``model`` (v2 model metadata)."""
        if self.protocol == "grpc":
            meta = await self._client.get_model_metadata(model, as_json=True)
        else:
            meta = await self._client.get_model_metadata(model)
        return [str(v) for v in meta.get("versions") or []]

    async def parameters(self, model: str) -> dict[str, str]:
        if self.protocol == "grpc":
            config = (await self._client.get_model_config(model, as_json=True))["config"]
        else:
            config = await self._client.get_model_config(model)
        return {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}

    async def close(self) -> None:
        await self._client.close()


@dataclass(slots=True)
class _Request:
    """One batch request and what its retries learn."""

    batch: NDArray[np.uint8]
    version: str | None  # the served version its events started with; None: the newest
    failures: int = 0


def _sized(images: list[NDArray[np.uint8]], size: tuple[int, int]) -> list[NDArray[np.uint8]]:
    """Images decoded for another version resized for this one (only around a rollout that changed sizes)."""
    return [
        img
        if img.shape[1] == size[0] and img.shape[0] == size[1]
        else cv2.resize(img, size, interpolation=cv2.INTER_AREA).astype(np.uint8, copy=False)
        for img in images
    ]


class RemoteClassifier(ServedModel):
    """The pipeline's classifier when ``inference_url`` is set: the same interface, scored remotely.

    ``info``/``generation`` are those of the newest version the server answered with (before the first
    answer: of ``model_dir``, the worker's local copy, for image sizes and cache keys)."""

    def __init__(self, settings: Settings, on_state: Callable[[bool], None] | None = None) -> None:
        super().__init__(ModelInfo.read(settings.model_dir), 0, settings.banner_threshold)
        self.settings = settings
        self.model = settings.inference_model
        self.url = settings.inference_url
        self._threshold = settings.banner_threshold
        self._client: _Client | None = None
        self._slots = asyncio.Semaphore(settings.inference_max_in_flight)
        self._served: dict[str, ServedModel] = {}
        self._latest = -1
        self._pin: str | None = None  # the version string of _latest
        self._ready: set[str] = set()  # the versions the server had ready at the last refresh()
        self.last_error = ""
        self._on_state = on_state
        self.breaker = CircuitBreaker(
            settings.inference_breaker_failures, settings.inference_breaker_reset_s, self._circuit_changed
        )
        metrics.register_model_server()
        metrics.MODEL_SERVER_UP.set(1)

    @property
    def available(self) -> bool:
        """Whether the server answers (the circuit is not open)."""
        return self.breaker.state == "closed"

    def _circuit_changed(self, state: str) -> None:
        metrics.MODEL_SERVER_UP.set(1 if state == "closed" else 0)
        if self._on_state is not None:
            self._on_state(state == "closed")

    def client(self) -> _Client:
        if self._client is None:  # created in the running event loop (aiohttp and gRPC bind to it)
            self._client = _Client(self.url, self.settings.inference_max_in_flight)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def pinned(self) -> tuple[Classifier, str | None]:
        """The served model an event starting now keeps, and its version: the newest this worker knows
        (before the server's first answer: this classifier, and None for the newest the server has)."""
        if self._pin is None:
            return self, None
        return self._served[self._pin], self._pin

    async def infer(
        self, images: list[NDArray[np.uint8]], versions: Sequence[str | None] | None = None
    ) -> list[tuple[Prediction, Classifier]]:
        """Score a batch remotely; each prediction comes with the served version that made it.

        ``versions`` pins each image to the version its event started with (``pinned()`` then): one
        request per version. Waits (retrying, behind the circuit) for as long as the server is unavailable."""
        if not images:
            return []
        pins = [None] * len(images) if versions is None else list(versions)
        if len(pins) != len(images):
            raise ValueError(f"{len(pins)} versions for {len(images)} images")
        groups: dict[str | None, list[int]] = {}
        for i, pin in enumerate(pins):
            groups.setdefault(pin, []).append(i)
        answers = await asyncio.gather(
            *(self._request([images[i] for i in indices], pin) for pin, indices in groups.items())
        )
        scored: dict[int, tuple[Prediction, Classifier]] = {}
        for indices, answer in zip(groups.values(), answers, strict=True):
            scored.update(zip(indices, answer, strict=True))
        return [scored[i] for i in range(len(images))]

    async def _request(
        self, images: list[NDArray[np.uint8]], version: str | None
    ) -> list[tuple[Prediction, Classifier]]:
        """One request for the images of one version, retried until the server answers it."""
        known = self._served.get(version) if version is not None else None
        size = known.input_size if known is not None else self.input_size
        request = _Request(np.ascontiguousarray(np.stack(_sized(images, size))), version)
        backoff = self.settings.inference_backoff_s
        metrics.MODEL_SERVER_WAITING.inc()
        try:
            async with self._slots:
                retrying = AsyncRetrying(
                    retry=retry_if_exception_type(ServerUnavailable),
                    wait=wait_exponential(multiplier=backoff, max=self.settings.inference_breaker_reset_s)
                    + wait_random(0, backoff),
                    reraise=True,
                    before_sleep=self._retrying,
                )
                async for attempt in retrying:
                    with attempt:
                        return await self._attempt(request, len(images))
        finally:
            metrics.MODEL_SERVER_WAITING.dec()
        raise AssertionError("unreachable: tenacity retries without a stop")

    def _retrying(self, state: Any) -> None:
        if state.attempt_number in (1, 10) or state.attempt_number % 100 == 0:
            log.warning("model server %s: attempt %d failed: %s", self.url, state.attempt_number, self.last_error)

    async def _unpin_if_gone(self, request: _Request) -> None:
        """Send a pinned request to the newest version once the server no longer has its version ready:
        known from the last refresh, or asked after a failure (the version may have been unloaded)."""
        if request.version is None:
            return
        ready = self._ready
        if request.failures:
            ready = set(await self.client().versions(self.model))
        if ready and request.version not in ready:
            log.info("model server no longer serves version %s: its events go to the newest", request.version)
            request.version = None

    async def _attempt(self, request: _Request, n: int) -> list[tuple[Prediction, Classifier]]:
        probe = self.breaker.before()
        started = time.perf_counter()
        metrics.MODEL_SERVER_IN_FLIGHT.inc()
        try:
            async with asyncio.timeout(self.settings.inference_timeout_s):
                await self._unpin_if_gone(request)
                version, result = await self.client().infer(self.model, request.batch, request.version)
                served = await self._version(version)
            banner = np.asarray(result.as_numpy("banner"), dtype=np.float64).reshape(-1)
            position = np.asarray(result.as_numpy("position"), dtype=np.float64)
            if banner.shape[0] != n or position.shape != (n, len(served.info.positions)):
                raise ServerUnavailable(f"server returned {banner.shape[0]} results for {n} images")
        except asyncio.CancelledError:
            if probe:  # a cancelled probe must not keep the next one waiting
                self.breaker.release()
            raise
        except Exception as exc:  # every failure of the call is the server's: wait and retry, never dead-letter
            request.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"[:500]
            self.breaker.after(False, probe)
            metrics.MODEL_SERVER_REQUESTS.labels(outcome="error").inc()
            raise ServerUnavailable(self.last_error) from exc
        finally:
            metrics.MODEL_SERVER_IN_FLIGHT.dec()
        self.breaker.after(True, probe)
        metrics.MODEL_SERVER_REQUESTS.labels(outcome="ok").inc()
        metrics.MODEL_SERVER_SECONDS.observe(time.perf_counter() - started)
        positions = served.info.positions
        return [
            (Prediction(float(b), dict(zip(positions, map(float, p), strict=True))), served)
            for b, p in zip(banner, position, strict=True)
        ]

    async def _version(self, version: str) -> ServedModel:
        """The served model of a version number the server answered with (its config, read once)."""
        served = self._served.get(version)
        if served is None:
            params = await self.client().parameters(self.model)
            text = params.get(METADATA_PREFIX + version)
            if text is None:  # a server without our metadata: the local model directory names the results
                info, generation = ModelInfo.read(self.settings.model_dir), 0
            else:
                info, generation = Served.parse(text)
            served = ServedModel(info, generation, self._threshold)
            self._served[version] = served
        number = int(version) if version.isdigit() else 0
        if number > self._latest:  # a newer version answered: new events are decoded, cached and pinned for it
            self._latest, self._pin = number, version
            self.info, self.generation, self.banner_threshold = served.info, served.generation, served.banner_threshold
            metrics.MODEL_INFO.clear()
            metrics.MODEL_INFO.labels(served.info.name, served.info.version).set(1)
            log.info("model server answers with %s %s (version %s)", served.info.name, served.info.version, version)
        return served

    async def refresh(self) -> bool:
        """Ask the server whether it and the model are ready, and take up its newest version (the monitor
        calls it): new events are then decoded and looked up in the cache for that version. True if ready."""
        try:
            async with asyncio.timeout(self.settings.inference_timeout_s):
                ok = await self.client().ready(self.model)
                ready = await self.client().versions(self.model)
                numbers = [v for v in ready if v.isdigit()]
                if ok:
                    self._ready = set(ready)
                if ok and numbers:
                    await self._version(max(numbers, key=int))
        except Exception as exc:  # any failure means not ready; say why
            self.last_error = f"{type(exc).__name__}: {exc}"[:500]
            ok = False
        metrics.MODEL_SERVER_READY.set(1 if ok else 0)
        if not ok and self.breaker.state == "closed":  # an idle worker notices the outage too
            self.breaker.after(False, probe=False)
        return ok
