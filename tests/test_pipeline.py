"""The pipeline core, run twice: with the in-memory twins of its sinks (no server at all) and against
the real stack (Postgres, Redis, the broker). A model that fails on one image, and storage that comes back."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import numpy as np
import orjson
import pytest
from numpy.typing import NDArray
from PIL import Image

from processor.cache import ResultCache
from processor.dev.imageserver import ImageServer
from processor.dev.memory import MemoryCache, MemoryPublisher, MemoryStore, Outage
from processor.dev.stack import StackUrls
from processor.errors import ModelError
from processor.events import Classification, DeadLetter, Envelope
from processor.model import Classifier, Prediction
from processor.pipeline import Pipeline
from processor.settings import Settings
from processor.sink import Cache, Publisher, Record, ResultStore
from processor.store import PostgresStore
from processor.topics import KafkaPublisher, ensure_topics, read_topic

from .conftest import event


class FlakyPublisher(Outage):
    """Any publisher whose first ``failures`` calls fail, like a broker outage."""

    def __init__(self, inner: Publisher, failures: int) -> None:
        super().__init__(failures)
        self.inner = inner

    async def publish(self, records: Sequence[Record]) -> None:
        self.check("broker")
        await self.inner.publish(records)


@dataclass
class Backend:
    """The sinks one run of the tests uses, and how to read back what they stored."""

    name: str
    store: ResultStore
    cache: Cache
    publisher: FlakyPublisher
    settings: Settings

    async def stored_images(self) -> set[str]:
        if isinstance(self.store, MemoryStore):
            return set(self.store.rows)
        store = PostgresStore(self.settings.postgres_dsn, self.settings.postgres_table)
        await store.start()
        try:
            return {r["image_id"] for r in await store.fetch_all()}
        finally:
            await store.close()

    async def published(self, expected: int) -> list[object]:
        inner = self.publisher.inner
        if isinstance(inner, MemoryPublisher):
            return [orjson.loads(r.value or b"null") for r in inner.records]
        url = self.settings.broker_url
        results = await read_topic(url, self.settings.output_topic, expected=expected - 1, timeout_s=10)
        return results + await read_topic(url, self.settings.dlq_topic, expected=1, timeout_s=10)


@pytest.fixture(params=["memory", "real"])
async def backend(request: pytest.FixtureRequest, settings: Settings, stack_urls: StackUrls) -> AsyncIterator[Backend]:
    if request.param == "memory":
        yield Backend("memory", MemoryStore(), MemoryCache(), FlakyPublisher(MemoryPublisher(), 2), settings)
        return
    await ensure_topics(settings.broker_url, settings.topics, 1)
    kafka = KafkaPublisher(settings.broker_url)
    await kafka.start()
    try:
        store = PostgresStore(settings.postgres_dsn, settings.postgres_table)
        cache = ResultCache(stack_urls.redis_url, 60)
        yield Backend("real", store, cache, FlakyPublisher(kafka, 2), settings)
    finally:
        await kafka.stop()


class PoisonedClassifier(Classifier):
    """The real model, except that it raises on any batch holding an all-white image."""

    def predict(self, images: list[NDArray[np.uint8]]) -> list[Prediction]:
        if any(int(img.min()) == 255 for img in images):
            raise ModelError("poisoned batch")
        return super().predict(images)


def white_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (320, 240), (255, 255, 255)).save(buf, "JPEG")
    return buf.getvalue()


async def test_one_bad_image_fails_alone_and_storage_outages_are_retried(
    backend: Backend, image_server: ImageServer, jpegs: dict[str, bytes]
) -> None:
    # the 8 images: one batch (a fixed delay; a latency budget would close it sooner)
    settings = backend.settings.with_overrides(batch_size=8, batch_delay_ms=5000, batch_latency_budget_ms=0)
    image_server.images["white.jpg"] = white_jpeg()
    pipeline = Pipeline(
        settings, PoisonedClassifier(settings.model_dir), backend.store, backend.cache, backend.publisher
    )
    await pipeline.start()
    try:
        names = [*sorted(jpegs)[:7], "white.jpg"]
        tag = settings.consumer_group
        envelopes = [
            # ?v= makes bytes of this run's own: no content-hash cache entry of an earlier test skips inference
            Envelope(orjson.dumps(event(f"p-{i}", image_server.url(n) + f"?v={tag}")), "images", 0, i)
            for i, n in enumerate(names)
        ]
        outcomes = await asyncio.gather(*(pipeline.process(e) for e in envelopes))
    finally:
        await pipeline.stop()
    assert [type(o) for o in outcomes] == [Classification] * 7 + [DeadLetter]
    assert isinstance(outcomes[-1], DeadLetter) and outcomes[-1].kind == "model_error"
    assert pipeline.inference.stats.splits >= 3, "the poisoned batch was not split down to the bad image"
    assert backend.publisher.failures == 0, "the two broker failures were not retried"
    published = await backend.published(8)
    assert len(published) == 8  # published once each, after two failed attempts were retried
    assert await backend.stored_images() == {f"p-{i}" for i in range(7)}
