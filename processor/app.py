"""The Faust edge: a consumer-group worker that feeds the pipeline and acks in order.

The agent runs with concurrency 1 and manual acks (``stream.noack()``); concurrency
comes from the OrderedAcker, which runs up to ``max_in_flight`` events at once and
acks each partition's events in offset order only after ``Pipeline.process`` has
stored them. Exceptions never escape the agent body.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import signal
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import faust
import orjson
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, EventT, StreamT

from . import metrics
from .acking import AckerHooks, OrderedAcker
from .brokerlink import BrokerWatch, guarded_commit, keep_pending_after_failure
from .cache import ResultCache
from .events import Envelope
from .fetchwait import MAX_DOUBLINGS, FetchWait, adapt_fetch_wait
from .follower import ModelFollower
from .health import WorkerHealth, serve
from .inference import RemoteClassifier
from .listings.actor import ListingActor
from .model import Classifier
from .pipeline import Pipeline
from .priority import lower_cpu_priority
from .settings import Settings
from .sink import Record
from .store import PostgresStore
from .topics import topic_configs

log = logging.getLogger(__name__)
DRAIN_MARGIN_S = 10.0  # closing connections after the grace period, at most
BACKFILL_YIELD_S = 0.02  # how often a waiting backfill event looks again whether the daily events left room


class FaustPublisher:
    """Publishes through the app's producer and waits for every broker acknowledgement."""

    def __init__(self, app: faust.App) -> None:
        self._app = app

    async def publish(self, records: Sequence[Record]) -> None:
        producer = self._app.producer
        futures = [await producer.send(r.topic, r.key, r.value, None, None, list(r.headers)) for r in records]
        await asyncio.gather(*futures)


def _consumer_with_fetch_wait(settings: Settings) -> type[faust_aiokafka.Consumer]:
    """Faust hard-codes a 1.5 s fetch wait; Tansu holds a fetch at the log end up to its wait, which adds
    up to 1.5 s of latency per fetch. This consumer waits ``broker_fetch_max_wait_ms`` at the log end and
    longer while a partition is behind it (processor.fetchwait: Tansu on S3 needs longer to read older
    records)."""
    short_ms, behind_ms = settings.broker_fetch_max_wait_ms, settings.broker_fetch_behind_wait_ms
    max_ms = min(behind_ms * 2**MAX_DOUBLINGS, int(settings.broker_request_timeout_s * 1000 / 2))

    class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = short_ms
            return consumer

        async def on_start(self) -> None:  # the consumer makes its fetcher when it starts
            await super().on_start()
            wait = FetchWait(short_ms, behind_ms, max_ms)
            adapt_fetch_wait(self._ensure_consumer()._fetcher, wait)

        async def _commit(self, offsets: Mapping[TP, int]) -> bool:  # commit failures by our rules (brokerlink)
            return await guarded_commit(self, offsets)

    class Consumer(faust_aiokafka.Consumer):
        def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

        async def _commit_offsets(self, offsets: Mapping[TP, int], start_new_transaction: bool = True) -> bool:
            before = {tp: self._committed_offset.get(tp) for tp in offsets}
            committed = await super()._commit_offsets(offsets, start_new_transaction)
            keep_pending_after_failure(self, offsets, committed, before)
            return bool(committed)

    return Consumer


def create_app(
    settings: Settings, classifier: Classifier, health: WorkerHealth | None = None
) -> tuple[faust.App, Callable[[], Awaitable[None]]]:
    """Build the Faust app and the pipeline it feeds; nothing connects until the worker starts."""
    health = health or WorkerHealth(settings.liveness_stall_s, model_loaded=True)
    app = _faust_app(settings)
    store = PostgresStore(settings.postgres_dsn, settings.postgres_table)
    cache = ResultCache(settings.redis_url, settings.cache_ttl_s)
    pipeline = Pipeline(settings, classifier, store, cache, FaustPublisher(app))
    source = _raw_topic(app, settings, settings.consumed_topic)
    inputs = (settings.input_topic, settings.backfill_topic)
    configs = topic_configs(settings)
    sinks = [
        app.topic(t, partitions=settings.topic_partitions, config=configs[t])
        for t in settings.topics
        if t not in inputs
    ]

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _assigned(_app: faust.App, assigned: set[Any], **_kw: Any) -> None:
        mine = {tp for tp in assigned if tp.topic == settings.consumed_topic}
        health.assignments += 1
        health.partitions = len(mine)
        log.info("partitions assigned: %d (%s)", len(mine), ", ".join(sorted(map(_tp, mine))))

    acker = _image_acker(app, pipeline, health, settings)

    follower = ModelFollower(pipeline, store, settings)

    app.task(BrokerWatch(settings, health).run)  # readiness and the log follow the broker

    @app.timer(settings.monitor_interval_s)  # type: ignore[untyped-decorator]
    async def monitor() -> None:
        await observe(app, acker, pipeline, health, settings)
        if settings.follow_registry and pipeline.started:
            await follower.check()

    @app.agent(source, concurrency=1, name="classify")
    async def classify(stream: StreamT[bytes]) -> None:
        await pipeline.start()  # idempotent: Faust restarts a crashed agent
        for topic in sinks:
            await topic.maybe_declare()
        log.info("worker consuming %s as group %s", settings.consumed_topic, settings.group_id)
        manual: Any = stream.noack()  # type: ignore[attr-defined]
        async for event in manual.events():
            await acker.submit(event.message.tp, event, functools.partial(_process, pipeline, _envelope(event)))

    ackers = [acker, *_other_agents(app, pipeline, store, health, settings)]

    async def drain() -> None:
        for each in ackers:
            each.close()
        drained = all([await each.wait(settings.shutdown_grace_s) for each in ackers])
        log.info(
            "worker stopping: %d acked; in-flight work %s",
            sum(each.acked for each in ackers),
            "finished" if drained else "abandoned (it will be replayed)",
        )
        await pipeline.stop()

    return app, drain


def _other_agents(
    app: faust.App, pipeline: Pipeline, store: PostgresStore, health: WorkerHealth, settings: Settings
) -> list[OrderedAcker[EventT[bytes]]]:
    """The role's other agents: the backfill topic after the daily events (role all) and the listing actor
    (not in a backfill worker: the daily workers' group keeps every listing)."""
    ackers = []
    if settings.worker_role == "all":
        ackers.append(_backfill_agent(app, pipeline, health, settings))
    if settings.listings_enabled and settings.worker_role != "backfill":
        ackers.append(_listing_agent(app, pipeline, store, settings))
    return ackers


def _listing_agent(
    app: faust.App, pipeline: Pipeline, store: PostgresStore, settings: Settings
) -> OrderedAcker[EventT[bytes]]:
    """The second actor: keyed by listing_id, it consumes the results and removals and keeps each
    listing's state (processor.listings). Acks follow the image agent's rules: in offset order per
    partition, only once the state is stored and its update confirmed by the broker."""
    actor = ListingActor(
        settings.listing_rules(),
        FaustPublisher(app),
        settings.listing_updates_topic,
        settings.postgres_table,
        settings.listings_table,
    )
    source = _raw_topic(app, settings, settings.output_topic, settings.removals_topic)

    async def ack(event: EventT[bytes]) -> None:
        event.ack()

    async def skip(event: EventT[bytes], exc: BaseException) -> None:
        log.error("listing update for %s keeps failing; skipped: %s", _envelope(event).describe(), exc)

    acker: OrderedAcker[EventT[bytes]] = OrderedAcker(
        AckerHooks(ack, describe=lambda event: _envelope(event).describe(), fallback=skip),
        settings.max_in_flight,
        settings.max_unacked_per_partition,
    )

    @app.agent(source, concurrency=1, name="listings")
    async def listings(stream: StreamT[bytes]) -> None:
        await pipeline.start()
        await actor.start(store.pool)
        manual: Any = stream.noack()  # type: ignore[attr-defined]
        async for event in manual.events():
            listing_id = _listing_of(event)
            if listing_id is None:  # not a record of ours: nothing to update
                metrics.LISTING_SKIPPED.inc()
                await acker.submit(event.message.tp, event, _nothing)
                continue
            correlation = _envelope(event).correlation_id()
            await acker.submit(event.message.tp, event, functools.partial(actor.update, listing_id, correlation))

    return acker


def _listing_of(event: EventT[bytes]) -> str | None:
    """The listing a result or removal record belongs to: its key, else its listing_id field."""
    key: Any = event.message.key
    if isinstance(key, bytes) and key:
        with contextlib.suppress(UnicodeDecodeError):
            return key.decode()
    try:
        listing = orjson.loads(event.message.value or b"").get("listing_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return listing if isinstance(listing, str) and listing else None


async def _nothing() -> None:
    return None


def _raw_topic(app: faust.App, settings: Settings, *names: str) -> Any:
    """Topics read as raw bytes (the pipeline parses and validates them itself)."""
    return app.topic(
        *names,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.topic_partitions,
    )


def _faust_app(settings: Settings) -> faust.App:
    app = faust.App(
        settings.group_id,
        broker=settings.broker_url,
        datadir=tempfile.mkdtemp(prefix="processor-worker-"),  # several workers per host never share it
        web_enabled=False,
        autodiscover=False,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.broker_session_timeout_s,
        broker_heartbeat_interval=settings.broker_heartbeat_interval_s,
        broker_rebalance_timeout=max(settings.broker_session_timeout_s * 2, 10.0),
        broker_commit_interval=settings.broker_commit_interval_s,
        broker_commit_every=10_000,
        broker_request_timeout=settings.broker_request_timeout_s,
        producer_request_timeout=settings.producer_request_timeout_s,
        stream_buffer_maxsize=max(settings.max_in_flight, 256),
        producer_acks=-1,
        producer_linger=0.005,
        stream_wait_empty=False,
        logging_config=None,
    )
    setattr(app.transport, "Consumer", _consumer_with_fetch_wait(settings))  # noqa: B010
    return app


def _image_acker(
    app: faust.App,
    pipeline: Pipeline,
    health: WorkerHealth,
    settings: Settings,
    max_unacked_per_partition: int | None = None,
    max_in_flight: int | None = None,
) -> OrderedAcker[EventT[bytes]]:
    """The acker of the image agent: acks in offset order, pauses a partition over budget, and
    stores an event whose processing keeps failing as a dead letter."""

    async def ack(event: EventT[bytes]) -> None:
        event.ack()
        health.progressed()
        metrics.LAST_PROGRESS.set_to_current_time()

    async def fallback(event: EventT[bytes], exc: BaseException) -> None:
        await pipeline.fail(_envelope(event), exc)

    return OrderedAcker(
        AckerHooks(
            ack,
            describe=lambda event: _envelope(event).describe(),
            # Faust's own per-partition flow control: no new fetches for the partition, while records it
            # already fetched are still delivered (pause_partitions would drop those, and they would never
            # come back before a rebalance).
            pause=lambda tp: app.consumer.on_buffer_full(_faust_tp(tp)),
            resume=lambda tp: app.consumer.on_buffer_drop(_faust_tp(tp)),
            fallback=fallback,
        ),
        max_in_flight or settings.max_in_flight,
        max_unacked_per_partition or settings.max_unacked_per_partition,
    )


def _backfill_agent(
    app: faust.App, pipeline: Pipeline, health: WorkerHealth, settings: Settings
) -> OrderedAcker[EventT[bytes]]:
    """The backfill topic, at a lower priority: few events processed at once (``backfill_max_in_flight``),
    each after waiting while ``backfill_yield_at`` daily events are decoding or waiting for inference
    (downloads use no CPU), so a catalogue-sized backfill uses the capacity the daily events leave. The
    agent itself never blocks: a backfill partition with ``backfill_max_in_flight`` events unacknowledged
    is paused in the consumer, so its backlog never fills Faust's buffers, which would hold up the delivery
    of daily events too."""
    source = _raw_topic(app, settings, settings.backfill_topic)
    # Never a full acker (its submit would wait, and Faust's delivery of daily events with it): the
    # partitions' budget and their pausing bound what it holds.
    acker = _image_acker(app, pipeline, health, settings, settings.backfill_max_in_flight, max_in_flight=2**16)
    slots = asyncio.Semaphore(settings.backfill_max_in_flight)

    async def after_daily(envelope: Envelope) -> None:
        async with slots:
            while pipeline.daily_at_cpu >= settings.backfill_yield_at:  # noqa: ASYNC110 - a poll keeps the acker unaware of priorities
                await asyncio.sleep(BACKFILL_YIELD_S)
            await _process(pipeline, envelope)

    @app.agent(source, concurrency=1, name="backfill")
    async def backfill(stream: StreamT[bytes]) -> None:
        await pipeline.start()
        manual: Any = stream.noack()  # type: ignore[attr-defined]
        async for event in manual.events():
            await acker.submit(event.message.tp, event, functools.partial(after_daily, _envelope(event)))

    return acker


def _faust_tp(tp: Any) -> TP:
    """Faust's own TP for a message's partition: messages carry aiokafka's TopicPartition, which compares
    equal but fails the consumer's isinstance checks once it lands in its set of active partitions."""
    return TP(tp.topic, tp.partition)


async def _process(pipeline: Pipeline, envelope: Envelope) -> None:
    try:
        await pipeline.process(envelope)
    except Exception:
        metrics.WORK_FAILURES.inc()
        raise


async def observe(
    app: faust.App, acker: OrderedAcker[EventT[bytes]], pipeline: Pipeline, health: WorkerHealth, settings: Settings
) -> None:
    """Refresh lag, oldest-unacked ages, stuck partitions and the Postgres check."""
    ages: dict[Any, float] = acker.oldest_age_s()
    stuck = set()
    for tp, age in ages.items():
        metrics.OLDEST_UNACKED.labels(tp.topic, str(tp.partition)).set(age)
        if age > settings.stuck_after_s:
            stuck.add(tp)
            if tp not in health.stuck:  # said once when it gets stuck, not at every check
                log.warning("partition %s stuck: oldest unacked event waits %.0f s", _tp(tp), age)
    for tp in health.stuck - stuck:
        log.info("partition %s moves again", _tp(tp))
    health.stuck = stuck
    metrics.STUCK_PARTITIONS.set(len(stuck))
    health.oldest_unacked_s = max(ages.values(), default=0.0)
    health.postgres_ok = await pipeline.store_reachable()
    try:
        assigned = [tp for tp in app.consumer.assignment() if tp.topic == settings.consumed_topic]
        highwaters = await app.consumer.highwaters(*assigned) if assigned else {}
        for tp in assigned:
            oldest = acker.oldest(tp)
            start = oldest.message.offset if oldest is not None else await app.consumer.position(tp)
            lag = max(0, highwaters.get(tp, 0) - (start or 0))
            metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(lag)
    except Exception as exc:  # lag is best effort: a rebalance or a broker hiccup skips one reading
        log.debug("lag not measured: %s: %s", type(exc).__name__, exc)


def _tp(tp: Any) -> str:
    return f"{tp.topic}/{tp.partition}"


class GracefulWorker(faust.Worker):
    """On SIGTERM/SIGINT, first drain in-flight events (acking what is stored), then stop Faust,
    whose consumer commits the acked offsets. A second signal stops at once."""

    def __init__(
        self, app: faust.App, drain: Callable[[], Awaitable[None]], drain_timeout_s: float, **kwargs: Any
    ) -> None:
        super().__init__(app, **kwargs)
        self._drain = drain
        self._drain_timeout_s = drain_timeout_s
        self._draining = False
        self._drain_task: asyncio.Future[None] | None = None

    def _on_sigterm(self) -> None:
        self._graceful(signal.SIGTERM)

    def _on_sigint(self) -> None:
        self._graceful(signal.SIGINT)

    def _graceful(self, sig: signal.Signals) -> None:
        if self._draining:
            self._schedule_shutdown(sig)
            return
        self._draining = True
        log.info("signal %s: draining in-flight events before stopping", sig.name)

        async def drain_then_stop() -> None:
            try:
                async with asyncio.timeout(self._drain_timeout_s):  # never hang on the way out
                    await self._drain()
            except TimeoutError:
                log.error(
                    "draining took over %.0f s; stopping anyway (unacked events are replayed)", self._drain_timeout_s
                )
            finally:
                self._schedule_shutdown(sig)

        self._drain_task = asyncio.ensure_future(drain_then_stop())


def _envelope(event: EventT[bytes]) -> Envelope:
    message = event.message
    value: Any = event.value
    return Envelope(
        value=value if isinstance(value, bytes) else bytes(value or b""),
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp_ms=int(message.timestamp * 1000) if message.timestamp else None,
        headers=_headers(message.headers),
    )


def _headers(headers: Any) -> tuple[tuple[str, bytes], ...]:
    """A message's headers as (name, bytes) pairs, whichever shape Faust hands them in."""
    pairs = headers.items() if isinstance(headers, dict) else headers or ()
    return tuple((str(k), bytes(v or b"")) for k, v in pairs)


def _cap_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives every decode thread its own malloc arena; with many variable-sized image buffers
    that fragments and RSS creeps up (a soak measured 4.8 MB/min, 1.1 with two arenas)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # M_ARENA_MAX


def _use_event_loop(kind: str) -> str:
    """Make ``kind`` the event loop of the loops created from now on; ``auto``: uvloop where installed."""
    if kind == "asyncio":
        return kind
    try:
        import uvloop
    except ImportError:
        if kind == "uvloop":
            raise
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def run_worker(settings: Settings) -> None:
    """Load the model, then run a Faust worker until SIGINT/SIGTERM."""
    if settings.idle_cpu:  # before the model's runtime starts its threads: they inherit it
        log.info("CPU priority: %s (%s role)", lower_cpu_priority(), settings.worker_role)
    _cap_malloc_arenas()
    log.info("event loop: %s", _use_event_loop(settings.event_loop))
    health = WorkerHealth(settings.liveness_stall_s)
    classifier: Classifier
    if settings.inference_url:  # a shared model server scores the batches (processor.inference)
        classifier = remote = RemoteClassifier(settings)
        health.model_server = lambda: remote.available
    else:
        classifier = Classifier.for_worker(settings.model_dir, settings)
    health.model_loaded = True
    metrics.MODEL_INFO.labels(classifier.info.name, classifier.info.version).set(1)
    app, drain = create_app(settings, classifier, health)
    if settings.metrics_port:

        @app.task  # type: ignore[untyped-decorator]
        async def serve_health() -> None:
            await serve(health, settings.metrics_port)

    drain_timeout_s = settings.shutdown_grace_s + DRAIN_MARGIN_S
    worker = GracefulWorker(
        app, drain, drain_timeout_s, loglevel=settings.log_level, quiet=True, redirect_stdouts=False
    )
    worker.execute_from_commandline()
