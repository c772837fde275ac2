"""The naive baseline: one event at a time — download, decode, predict, insert, publish, commit."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime

import aiohttp
import asyncpg
import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from PIL import Image

from processor.model import Classifier
from processor.settings import Settings
from processor.topics import bootstrap

TABLE_SQL = """CREATE TABLE IF NOT EXISTS naive_classifications (
    image_id text PRIMARY KEY, has_banner boolean, banner_score real, position text, classified_at timestamptz)"""


async def naive_rate(settings: Settings, classifier: Classifier, events: int) -> float:
    """Images/s of the one-at-a-time loop over ``events`` events already in the input topic."""
    # The plain Keras model: naive code calls model.predict per image.
    model = (
        classifier._model if classifier.runtime == "keras" else Classifier(settings.model_dir, runtime="keras")._model
    )
    consumer = AIOKafkaConsumer(
        settings.input_topic,
        bootstrap_servers=bootstrap(settings.broker_url),
        group_id=settings.consumer_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(settings.broker_url), acks="all")
    conn = await asyncpg.connect(settings.postgres_dsn)
    await conn.execute(TABLE_SQL)
    await consumer.start()
    await producer.start()
    done = 0
    try:
        async with aiohttp.ClientSession() as session:
            start = time.perf_counter()
            while done < events:
                message = await consumer.getone()
                event = orjson.loads(message.value)
                async with session.get(event["url"]) as resp:
                    data = await resp.read()
                img = Image.open(io.BytesIO(data)).convert("RGB").resize(classifier.input_size)
                out = model.predict(np.asarray(img, dtype=np.uint8)[None], verbose=0)
                score = float(out["banner"][0][0])
                position = classifier.info.positions[int(np.argmax(out["position"][0]))]
                await conn.execute(
                    "INSERT INTO naive_classifications VALUES ($1, $2, $3, $4, $5) ON CONFLICT (image_id) DO NOTHING",
                    event["image_id"],
                    score >= classifier.banner_threshold,
                    score,
                    position,
                    datetime.now(UTC),
                )
                await producer.send_and_wait(settings.output_topic, orjson.dumps({"image_id": event["image_id"]}))
                await consumer.commit()
                done += 1
            return done / (time.perf_counter() - start)
    finally:
        await consumer.stop()
        await producer.stop()
        await conn.execute("DROP TABLE IF EXISTS naive_classifications")
        await conn.close()
