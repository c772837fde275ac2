"""The pipeline core: one event in, one stored outcome out. No Faust here.

    parse -> cache(url) -> fetch -> cache(hash) -> decode (threads) -> inference batcher
                -> sink: Postgres, then the output/DLQ topic (broker-confirmed), then Redis

``process()`` returns only when the outcome is in Postgres and the broker confirmed
its record, so the caller may acknowledge the input as soon as it returns. Every
failure of the event itself becomes a DeadLetter; storage failures are retried until
they succeed or the pipeline stops (then ``process()`` raises and nothing is acked).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import cv2
import numpy as np
from numpy.typing import NDArray

from . import metrics
from .batching import LatencyBudget, MicroBatcher
from .cache import CachedResult
from .decode import DecodedImage, Decoder
from .errors import ProcessorError
from .events import (
    Classification,
    DeadLetter,
    Deletion,
    Envelope,
    EventLimits,
    ImageEvent,
    Outcome,
    best_effort_ids,
    event_time_of,
    parse_event,
)
from .fetch import Fetcher, Validators
from .inference import RemoteClassifier, ServedModel
from .model import Classifier, Prediction
from .settings import Settings
from .sink import Cache, Publisher, ResultStore, Sink, SinkTopics, until_done

log = logging.getLogger(__name__)


class Pipeline:
    """Owns the fetcher, decode pool, model, cache and sinks; create once per worker."""

    def __init__(
        self, settings: Settings, classifier: Classifier, store: ResultStore, cache: Cache, publisher: Publisher
    ) -> None:
        self.settings = settings
        self.classifier = classifier
        self.store = store
        self.cache = cache
        self.fetcher = Fetcher(settings)
        self._decode_pool = ThreadPoolExecutor(
            settings.decode_threads or os.cpu_count() or 2, thread_name_prefix="decode"
        )
        self._infer_pool = ThreadPoolExecutor(1, thread_name_prefix="inference")
        self.decoder = Decoder.from_settings(settings)
        # Backfill events are served after the daily ones where the CPU is: they decode one at a time (a
        # daily image waits behind at most one of them) and join inference batches after every daily image.
        self._backfill_decodes = asyncio.Semaphore(1)
        self.daily_at_cpu = 0  # daily events decoding or waiting for inference: what backfill events yield to
        self.inference = MicroBatcher(
            self._infer,
            settings.batch_size,
            settings.batch_delay_ms / 1000,
            name="inference",
            on_batch=metrics.observe_inference_batch,
            max_concurrent=settings.inference_max_in_flight if settings.inference_url else 1,
            policy=LatencyBudget(settings.batch_latency_budget_ms / 1000) if settings.batch_latency_budget_ms else None,
        )
        self.sink = Sink(
            store,
            publisher,
            cache,
            SinkTopics(settings.output_topic, settings.dlq_topic, settings.removals_topic),
            settings.store_batch_size,
            settings.store_batch_delay_ms / 1000,
        )
        self._limits = EventLimits(
            settings.max_event_bytes,
            timedelta(days=settings.event_time_max_past_days),
            timedelta(seconds=settings.event_time_max_future_s),
        )
        self._started = False
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        """Connect everything; waits (retrying) for Postgres, which the worker cannot run without."""
        async with self._starting:  # both agents start it; the second waits for the first
            if self._started:
                return
            await until_done(self.store.start, "postgres connect")
            await until_done(self.store.migrate, "postgres migrate")
            await self.fetcher.start()
            await self.cache.start()
            if not isinstance(self.classifier, ServedModel):  # a model server warms its own
                await asyncio.get_running_loop().run_in_executor(
                    self._infer_pool, self.classifier.warm_up, self.settings.batch_size
                )
            self.inference.start()
            self.sink.start()
            self._started = True

    async def stop(self) -> None:
        await self.inference.stop()
        if isinstance(self.classifier, RemoteClassifier):
            await self.classifier.close()
        await self.sink.stop()
        await self.fetcher.close()
        await self.cache.close()
        await self.store.close()
        self._decode_pool.shutdown(wait=False, cancel_futures=True)
        self._infer_pool.shutdown(wait=False, cancel_futures=True)

    async def process(self, envelope: Envelope) -> Outcome:
        """Classify or dead-letter one event and store the outcome."""
        metrics.IN_FLIGHT.inc()
        try:
            outcome = await self.sink.submit(await self.classify(envelope))
        finally:
            metrics.IN_FLIGHT.dec()
        if isinstance(outcome, Classification):
            metrics.EVENTS.labels(outcome="classified").inc()
            metrics.LATENCY.observe(max(0.0, time.time() - outcome.event_time.timestamp()))
        elif isinstance(outcome, Deletion):
            metrics.EVENTS.labels(outcome="deleted").inc()
        else:
            metrics.EVENTS.labels(outcome="dead_letter").inc()
            metrics.DLQ.labels(kind=outcome.kind).inc()
        return outcome

    async def fail(self, envelope: Envelope, exc: BaseException) -> Outcome:
        """Store an event whose processing keeps raising as an ``internal_error`` dead letter."""
        ids = best_effort_ids(envelope.value)
        detail = f"processing kept failing: {type(exc).__name__}: {exc}"
        dead = DeadLetter(envelope, "internal_error", detail, 1, ids.get("image_id"), ids.get("listing_id"))
        return await self.sink.submit(dead)

    async def store_reachable(self, timeout_s: float = 2.0) -> bool:
        """Whether the result store answers now (readiness)."""
        try:
            async with asyncio.timeout(timeout_s):
                return await self.store.ping()
        except (TimeoutError, OSError, ConnectionError):
            return False
        except Exception as exc:  # any driver error means not reachable; say which
            log.debug("store ping failed: %s: %s", type(exc).__name__, exc)
            return False

    async def classify(self, envelope: Envelope) -> Outcome:
        """The outcome of one event, not yet stored; never raises for a bad event."""
        event: ImageEvent | None = None
        attempts = 1
        try:
            event = parse_event(envelope.value, self._limits)
            if event.deleted:
                return Deletion(event, envelope, event_time_of(event, envelope))
            return await self._classify(event, envelope)
        except ProcessorError as exc:
            return self._dead(envelope, event, exc.kind, exc.detail, getattr(exc, "attempts", attempts))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not stop the worker: record it and move on
            log.exception("internal error on %s", envelope.describe())
            return self._dead(envelope, event, "internal_error", f"{type(exc).__name__}: {exc}", attempts)

    @property
    def started(self) -> bool:
        return self._started

    def use_model(self, classifier: Classifier) -> None:
        """Switch models between events (a rollout): events already being classified keep the model
        they started with, every result names the model that made it."""
        self.classifier = classifier

    async def _classify(self, event: ImageEvent, envelope: Envelope) -> Classification:
        started = time.perf_counter()
        clf = self.classifier  # this event's model, whatever a rollout does meanwhile
        pin: str | None = None
        if isinstance(clf, RemoteClassifier):  # on a model server, the served version it answers with now
            clf, pin = clf.pinned()
        model = f"{clf.info.name}:{clf.info.version}"
        cached = await self.cache.get_url(event.url, model)
        if cached is not None and time.time() - cached.checked_at < self.settings.revalidate_after_s:
            return self._result(clf, event, envelope, cached, "url", {"total": _ms(started)})
        validators = Validators(cached.etag, cached.last_modified) if cached is not None else None
        download = await self.fetcher.fetch(event.url, validators)
        fetched = time.perf_counter()
        if download.not_modified and cached is not None:  # the server says the image did not change
            return self._result(clf, event, envelope, cached, "revalidated", {"total": _ms(started)})
        content_hash = "sha256:" + hashlib.sha256(download.data).hexdigest()
        cached = await self.cache.get_hash(content_hash, model)
        if cached is not None:
            timings = {"fetch": (fetched - started) * 1000, "total": _ms(started)}
            return self._result(clf, event, envelope, cached, "hash", timings, download.validators)
        # Only where backfill shares the process with daily events: a backfill worker's events are all
        # backfill, and the kernel puts its process behind the daily workers' (processor.priority).
        backfill = self.settings.worker_role == "all" and envelope.topic == self.settings.backfill_topic
        self.daily_at_cpu += not backfill
        try:
            async with self._backfill_decodes if backfill else contextlib.nullcontext():
                decoded: DecodedImage = await asyncio.get_running_loop().run_in_executor(
                    self._decode_pool, self.decoder.decode, download.data, clf.input_size
                )
            decoded_at = time.perf_counter()
            prediction, clf = await self.inference.submit((decoded.pixels, pin), low_priority=backfill)
        finally:
            self.daily_at_cpu -= not backfill
        timings = {
            "fetch": (fetched - started) * 1000,
            "decode": (decoded_at - fetched) * 1000,
            "inference": _ms(decoded_at),
            "total": _ms(started),
        }
        result = CachedResult(
            content_hash, prediction.banner_score, prediction.position_scores, decoded.width, decoded.height
        )
        return self._result(clf, event, envelope, result, "miss", timings, download.validators)

    @staticmethod
    def _result(
        clf: Classifier,
        event: ImageEvent,
        envelope: Envelope,
        r: CachedResult,
        cache: str,
        timings: dict[str, float],
        validators: Validators | None = None,
    ) -> Classification:
        """The classification of a result; ``validators`` of a fresh download, else those the cache had."""
        v = validators or Validators(r.etag, r.last_modified)
        info = clf.info
        return Classification(
            event=event,
            envelope=envelope,
            has_banner=r.banner_score >= clf.banner_threshold,
            banner_score=r.banner_score,
            banner_threshold=clf.banner_threshold,
            position=Prediction(r.banner_score, r.position_scores).position_at(info.position_floor),
            position_scores=r.position_scores,
            model_name=info.name,
            model_version=info.version,
            content_hash=r.content_hash,
            width=r.width,
            height=r.height,
            event_time=event_time_of(event, envelope),
            cache=cache,
            timings_ms=timings,
            etag=v.etag,
            last_modified=v.last_modified,
            model_generation=clf.generation,
        )

    @staticmethod
    def _dead(envelope: Envelope, event: ImageEvent | None, kind: str, detail: str, attempts: int) -> DeadLetter:
        if event is not None:
            return DeadLetter(envelope, kind, detail, attempts, event.image_id, event.listing_id)
        ids = best_effort_ids(envelope.value)
        return DeadLetter(envelope, kind, detail, attempts, ids.get("image_id"), ids.get("listing_id"))

    async def _infer(self, items: list[tuple[NDArray[np.uint8], str | None]]) -> list[tuple[Prediction, Classifier]]:
        """One batch on the current model; each prediction comes with the model that made it. On a model
        server, each image on the served version its event started with (its outages make the batch wait)."""
        clf = self.classifier
        images = [pixels for pixels, _ in items]
        if isinstance(clf, RemoteClassifier):
            return await clf.infer(images, [pin for _, pin in items])
        loop = asyncio.get_running_loop()
        predictions = await loop.run_in_executor(self._infer_pool, clf.predict, fit(images, clf.input_size))
        return [(p, clf) for p in predictions]


def fit(images: list[NDArray[np.uint8]], size: tuple[int, int]) -> list[NDArray[np.uint8]]:
    """Images decoded for the previous model resized for this one (only around a rollout)."""
    out: list[NDArray[np.uint8]] = []
    for img in images:
        if img.shape[1] != size[0] or img.shape[0] != size[1]:
            img = cv2.resize(img, size, interpolation=cv2.INTER_AREA).astype(np.uint8, copy=False)
        out.append(img)
    return out


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000
