"""The pipeline core without a broker: a model that fails on one image, and storage that comes back."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import orjson
from numpy.typing import NDArray

from processor.cache import ResultCache
from processor.errors import ModelError
from processor.events import Classification, DeadLetter, Envelope
from processor.imageserver import ImageServer
from processor.model import Classifier, Prediction
from processor.pipeline import Pipeline, Record
from processor.settings import Settings
from processor.store import PostgresStore

from .conftest import event


class RecordingPublisher:
    """Stands in for the broker here (the broker path is covered by the end-to-end tests)."""

    def __init__(self, failures: int = 0) -> None:
        self.records: list[Record] = []
        self.failures = failures

    async def publish(self, records: Sequence[Record]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker unavailable")
        self.records.extend(records)


class PoisonedClassifier(Classifier):
    """The real model, except that it raises on any batch holding an all-white image."""

    def predict(self, images: list[NDArray[np.uint8]]) -> list[Prediction]:
        if any(int(img.min()) == 255 for img in images):
            raise ModelError("poisoned batch")
        return super().predict(images)


def white_jpeg() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (320, 240), (255, 255, 255)).save(buf, "JPEG")
    return buf.getvalue()


async def test_one_bad_image_fails_alone_and_storage_outages_are_retried(
    settings: Settings, image_server: ImageServer, jpegs: dict[str, bytes]
) -> None:
    settings = settings.with_overrides(redis_url="", batch_size=16, batch_delay_ms=200)
    image_server.images["white.jpg"] = white_jpeg()
    classifier = PoisonedClassifier(settings.model_dir)
    publisher = RecordingPublisher(failures=2)
    store = PostgresStore(settings.postgres_dsn, settings.postgres_table)
    cache = ResultCache("", "m", 60)
    pipeline = Pipeline(settings, classifier, store, cache, publisher)
    await pipeline.start()
    try:
        names = [*sorted(jpegs)[:7], "white.jpg"]
        envelopes = [
            Envelope(orjson.dumps(event(f"p-{i}", image_server.url(n))), "images", 0, i) for i, n in enumerate(names)
        ]
        outcomes = await asyncio.gather(*(pipeline.process(e) for e in envelopes))
    finally:
        await pipeline.stop()
    assert [type(o) for o in outcomes] == [Classification] * 7 + [DeadLetter]
    assert isinstance(outcomes[-1], DeadLetter) and outcomes[-1].kind == "model_error"
    assert pipeline.inference.stats.splits >= 3, "the poisoned batch was not split down to the bad image"
    assert len(publisher.records) == 8  # published once each, after two failed attempts were retried
    await store.start()
    try:
        assert len(await store.fetch_all()) == 7
    finally:
        await store.close()
