"""A fault lab: a worker in a network namespace of its own, reaching the broker, Postgres, Redis and the
image CDN each through a link (a veth pair) of its own that the lab can cut or slow, while a live stream
flows and the lab measures what recovery took and what the operator saw.

Addresses: service ``k`` listens on 10.213.k.1 (an address on the host's loopback); the namespace reaches
it through veth pair ``k`` (10.213.k.5 on the host, 10.213.k.6 in the namespace). The broker (Tansu,
durable: S3 storage), Postgres (a Unix socket), Redis and the CDN sit behind TCP forwarders on those
addresses; the worker's health endpoint is reached on 10.213.5.6 over a link that is never faulted.
Clients on the host (the stream, the observer, a worker outside) reach the same addresses locally, never
through a faulted link.

Faults: a partition sets the host end of the link down (every packet either way vanishes, as in a real
partition: connections hang rather than being refused); with ``tc netem`` in the kernel it is ``loss 100%``
instead. Delay and loss use ``netem`` where the kernel has it (``sch_netem``); without it the forwarders
delay what comes from the namespace (packet loss cannot be made then, and the outcome says so).
Needs root (``ip netns``). Used by ``tests/test_faults.py`` (``make faults``); the figures are in
docs/operations/faults.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shutil
import statistics
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from ..settings import Settings
from ..topics import bootstrap, ensure_topics, group_lag, read_records
from .harness import WorkerProcess
from .imageserver import ImageServer
from .stack import EmbeddedStack, free_port

log = logging.getLogger(__name__)
SUBNET = "10.213"
LINKS = {"broker": 1, "postgres": 2, "redis": 3, "cdn": 4, "mgmt": 5}
Upstream = Callable[[], Any]


def service_ip(link: str) -> str:
    return f"{SUBNET}.{LINKS[link]}.1"


def worker_ip(link: str) -> str:
    return f"{SUBNET}.{LINKS[link]}.6"


def can_run() -> str | None:
    """Why the lab cannot run here (None when it can)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if not shutil.which("ip") or not shutil.which("tc"):
        return "needs iproute2 (ip, tc)"
    return None


def _sh(*args: str, check: bool = True) -> bool:
    return subprocess.run(args, check=check, capture_output=True).returncode == 0


def netem_available() -> bool:
    """Whether the kernel has ``sch_netem`` (tried on a throwaway dummy-free device: the loopback of a namespace)."""
    probe = "pfault-probe"
    _sh("ip", "netns", "add", probe, check=False)
    try:
        return _sh(
            "ip",
            "netns",
            "exec",
            probe,
            "tc",
            "qdisc",
            "add",
            "dev",
            "lo",
            "root",
            "netem",
            "delay",
            "1ms",
            check=False,
        )
    finally:
        _sh("ip", "netns", "del", probe, check=False)


class Network:
    """One namespace and one veth pair per link."""

    def __init__(self, name: str = "pfault") -> None:
        self.ns = name
        self.prefix = ("ip", "netns", "exec", name)
        self.netem = False

    def up(self) -> None:
        self.down()
        self.netem = netem_available()
        _sh("ip", "netns", "add", self.ns)
        _sh(*self.prefix, "ip", "link", "set", "lo", "up")
        for link, k in LINKS.items():
            outer, inner = self._ends(link)
            _sh("ip", "addr", "add", f"{service_ip(link)}/32", "dev", "lo")
            _sh("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
            _sh("ip", "link", "set", inner, "netns", self.ns)
            _sh("ip", "addr", "add", f"{SUBNET}.{k}.5/30", "dev", outer)
            _sh("ip", "link", "set", outer, "up")
            _sh(*self.prefix, "ip", "addr", "add", f"{worker_ip(link)}/30", "dev", inner)
            _sh(*self.prefix, "ip", "link", "set", inner, "up")
            _sh(*self.prefix, "ip", "route", "add", f"{service_ip(link)}/32", "via", f"{SUBNET}.{k}.5")

    def down(self) -> None:
        for link in LINKS:
            _sh("ip", "link", "del", self._ends(link)[0], check=False)  # takes its peer along
            _sh("ip", "addr", "del", f"{service_ip(link)}/32", "dev", "lo", check=False)
        _sh("ip", "netns", "del", self.ns, check=False)

    def _ends(self, link: str) -> tuple[str, str]:
        return f"pf{link[:3]}h", f"pf{link[:3]}w"

    def partition(self, link: str) -> None:
        """Every packet on the link vanishes, both ways."""
        if self.netem:
            self.shape(link, "loss", "100%")
        else:
            _sh("ip", "link", "set", self._ends(link)[0], "down")

    def shape(self, link: str, *netem: str) -> None:
        """``netem`` arguments on both ends of ``link`` (needs ``sch_netem``)."""
        outer, inner = self._ends(link)
        _sh("tc", "qdisc", "replace", "dev", outer, "root", "netem", *netem)
        _sh(*self.prefix, "tc", "qdisc", "replace", "dev", inner, "root", "netem", *netem)

    def heal(self, link: str) -> None:
        outer, inner = self._ends(link)
        _sh("ip", "link", "set", outer, "up", check=False)
        _sh("tc", "qdisc", "del", "dev", outer, "root", check=False)
        _sh(*self.prefix, "tc", "qdisc", "del", "dev", inner, "root", check=False)


class Forwarder:
    """TCP forwarders (listen address -> upstream) on an event loop of their own. What arrives from the
    namespace (any source outside the service addresses) can be delayed per listener: ``delay_s[host]``."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="forwarder", daemon=True)
        self._servers: list[asyncio.Server] = []
        self.delay_s: dict[str, float] = {}

    def start(self) -> None:
        self._thread.start()

    def add(self, host: str, port: int, upstream: Upstream) -> None:
        async def serve() -> asyncio.Server:
            return await asyncio.start_server(functools.partial(self._connection, host, upstream), host, port)

        self._servers.append(asyncio.run_coroutine_threadsafe(serve(), self._loop).result(10))

    async def _connection(
        self, host: str, upstream: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            up_reader, up_writer = await upstream()
        except OSError:
            writer.close()
            return
        peer = str(writer.get_extra_info("peername", ("",))[0])
        from_namespace = peer.startswith(SUBNET) and not peer.endswith(".1")

        def delay() -> float:
            return self.delay_s.get(host, 0.0) if from_namespace else 0.0

        await asyncio.gather(_pipe(reader, up_writer, delay), _pipe(up_reader, writer, delay), return_exceptions=True)

    def stop(self) -> None:
        async def shutdown() -> None:
            for server in self._servers:
                server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        self._loop.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: Callable[[], float]) -> None:
    """Copy one direction; each chunk leaves ``delay()`` seconds after it arrived (a latency, not a rate)."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def send() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                return
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(send())
    try:
        while data := await reader.read(65536):
            queue.put_nowait((time.monotonic() + delay(), data))
        queue.put_nowait((0.0, b""))
        await sender
    finally:
        sender.cancel()
        writer.close()


@dataclass
class Lab:
    """The stack, the CDN and the network, set up once for every scenario."""

    root: Path
    images: dict[str, bytes]
    network: Network = field(default_factory=Network)
    stack: EmbeddedStack | None = None
    forwarder: Forwarder = field(default_factory=Forwarder)
    cdn: ImageServer | None = None
    cdn_url: str = ""
    postgres_dsn: str = ""
    redis_url: str = ""
    broker_url: str = ""

    async def start(self) -> None:
        await asyncio.to_thread(self.network.up)
        self.forwarder.start()
        broker_port = free_port(service_ip("broker"))
        (self.root / "stack").mkdir(parents=True, exist_ok=True)
        self.stack = EmbeddedStack(self.root / "stack", durable=True, advertise=f"{service_ip('broker')}:{broker_port}")
        urls = await asyncio.to_thread(self.stack.start)
        self.broker_url = urls.broker_url
        tansu = ("127.0.0.1", self.stack.broker_port)
        self.forwarder.add(service_ip("broker"), broker_port, lambda: asyncio.open_connection(*tansu))
        pg = urlparse(urls.postgres_dsn)
        query = parse_qs(pg.query)
        socket_path = f"{query['host'][0]}/.s.PGSQL.{query.get('port', [str(pg.port or 5432)])[0]}"
        pg_port = free_port(service_ip("postgres"))
        self.forwarder.add(service_ip("postgres"), pg_port, lambda: asyncio.open_unix_connection(socket_path))
        self.postgres_dsn = f"postgresql://{pg.username or 'postgres'}@{service_ip('postgres')}:{pg_port}{pg.path}"
        redis = urlparse(urls.redis_url)
        redis_port = free_port(service_ip("redis"))
        self.forwarder.add(
            service_ip("redis"), redis_port, lambda: asyncio.open_connection(redis.hostname or "", redis.port or 6379)
        )
        self.redis_url = f"redis://{service_ip('redis')}:{redis_port}/0"
        self.cdn = ImageServer(images=dict(self.images))
        await self.cdn.start()
        cdn_port = free_port(service_ip("cdn"))
        origin = ("127.0.0.1", self.cdn.port)
        self.forwarder.add(service_ip("cdn"), cdn_port, lambda: asyncio.open_connection(*origin))
        self.cdn_url = f"http://{service_ip('cdn')}:{cdn_port}"

    async def stop(self) -> None:
        if self.cdn is not None:
            await self.cdn.__aexit__(None, None, None)
        await asyncio.to_thread(self.forwarder.stop)
        if self.stack is not None:
            await asyncio.to_thread(self.stack.stop)
        await asyncio.to_thread(self.network.down)

    def slow(self, links: tuple[str, ...], delay_ms: int, loss_pct: float) -> list[str]:
        """``delay_ms`` more per round trip and ``loss_pct`` loss each way on the links; returns notes on
        what could not be done on this kernel."""
        if self.network.netem:
            for link in links:
                self.network.shape(link, "delay", f"{delay_ms // 2}ms", "loss", f"{loss_pct}%")
            return []
        for link in links:
            self.forwarder.delay_s[service_ip(link)] = delay_ms / 2000
        return [f"no sch_netem in this kernel: {delay_ms} ms more per round trip by the forwarders, no packet loss"]

    def unslow(self, links: tuple[str, ...]) -> None:
        for link in links:
            self.network.heal(link)
            self.forwarder.delay_s.pop(service_ip(link), None)

    def worker(self, settings: Settings, log_path: Path, inside: bool = True) -> WorkerProcess:
        """A worker in the namespace (faults apply), or on the host (``inside=False``: never faulted)."""
        if inside:
            settings = settings.with_overrides(metrics_port=free_port())
            return WorkerProcess(settings, log_path, self.network.prefix, worker_ip("mgmt"))
        return WorkerProcess(settings, log_path)


class Stream:
    """Produces events at ``rate`` per second until stopped, retrying each until the broker acknowledges it;
    remembers every acknowledged image id and the log end of each partition it wrote to."""

    def __init__(self, settings: Settings, url_of: Callable[[int], str], rate: float) -> None:
        self.settings = settings
        self.url_of = url_of
        self.rate = rate
        self.ids: set[str] = set()
        self.ends: dict[int, int] = {}
        self.slow_ids: set[str] = set()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.n = 0

    async def start(self) -> None:
        await ensure_topics(self.settings.broker_url, [self.settings.input_topic], self.settings.topic_partitions)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap(self.settings.broker_url), request_timeout_ms=5000)
        await producer.start()
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                await self._send(producer, self.n)
                self.n += 1
                await asyncio.sleep(max(0.0, 1 / self.rate - (time.monotonic() - started)))
        finally:
            with contextlib.suppress(Exception):
                await producer.stop()

    async def _send(self, producer: AIOKafkaProducer, n: int) -> None:
        image_id = f"f-{n}"
        url = self.url_of(n)
        listing = f"l-{n % 61}"
        body = {"image_id": image_id, "listing_id": listing, "url": url, "position_index": n % 12}
        while True:
            try:
                meta = await producer.send_and_wait(self.settings.input_topic, orjson.dumps(body), key=listing.encode())
                break
            except Exception:  # the broker is away: the same event again, as a real producer would
                await asyncio.sleep(0.5)
        self.ids.add(image_id)
        if "/slow/" in url:
            self.slow_ids.add(image_id)
        self.ends[meta.partition] = max(self.ends.get(meta.partition, 0), meta.offset + 1)


@dataclass
class Sample:
    t: float
    lag: int | None
    ready: bool | None


class Observer:
    """Samples the group's lag (log ends the stream saw minus committed offsets) and each worker's readiness."""

    def __init__(self, settings: Settings, stream: Stream, workers: Callable[[], list[WorkerProcess]]) -> None:
        self.settings = settings
        self.stream = stream
        self.workers = workers
        self.samples: list[Sample] = []
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()

    async def _run(self) -> None:
        while True:
            lag = await self._lag()
            states = [await asyncio.to_thread(w.probe) for w in self.workers()]
            ready = all(status == 200 for status, _ in states) if states else None
            self.samples.append(Sample(time.monotonic(), lag, ready))
            await asyncio.sleep(0.5)

    async def _lag(self) -> int | None:
        try:
            async with asyncio.timeout(2):
                if self._consumer is None:
                    self._consumer = AIOKafkaConsumer(
                        bootstrap_servers=bootstrap(self.settings.broker_url),
                        group_id=self.settings.consumer_group,
                        enable_auto_commit=False,
                        request_timeout_ms=2000,
                    )
                    await self._consumer.start()
                total = 0
                for partition, end in list(self.stream.ends.items()):
                    tp = TopicPartition(self.settings.input_topic, partition)
                    total += end - (await self._consumer.committed(tp) or 0)
                return total
        except Exception:  # the broker is away (or the link to it is): no reading this time
            if self._consumer is not None:
                consumer, self._consumer = self._consumer, None
                with contextlib.suppress(Exception):
                    await consumer.stop()
            return None


@dataclass
class Outcome:
    """What one scenario measured."""

    name: str
    fault: str
    fault_s: float
    events: int
    accounted: int
    dead_letters: int
    duplicates: int
    final_lag: int
    baseline_lag: float
    recovery_s: float | None
    not_ready_s: float
    ready_false_after_s: float | None
    ready_again_after_s: float | None
    log_lines: int
    metrics: dict[str, float]
    workers_alive: bool
    restarts: int = 0
    notes: list[str] = field(default_factory=list)

    def row(self) -> str:
        rec = "n/a" if self.recovery_s is None else f"{self.recovery_s:.1f}"
        false_after = "never" if self.ready_false_after_s is None else f"{self.ready_false_after_s:.1f} s"
        again = "n/a" if self.ready_again_after_s is None else f"{self.ready_again_after_s:.1f} s"
        metric_text = ", ".join(f"{k} {v:g}" for k, v in sorted(self.metrics.items()) if v) or "none"
        return (
            f"| {self.name} | {self.fault}{''.join(f' ({n})' for n in self.notes)} | "
            f"{self.events} / {self.accounted} ({self.dead_letters} DLQ) | "
            f"{self.final_lag} | {rec} | {self.duplicates} | not ready {self.not_ready_s:.0f} s "
            f"(false after {false_after}, ready {again} after healing) | {self.log_lines} | {metric_text} |"
        )


TABLE_HEADER = (
    "| scenario | fault | events / accounted | final lag | recovery (s) | duplicates published | readiness | "
    "worker log lines | metrics at the end |\n|---|---|---|---|---|---|---|---|---|"
)


def summarise(samples: list[Sample], fault_at: float, healed_at: float) -> dict[str, Any]:
    """Baseline lag before the fault, seconds from healing to lag back at that level, and readiness."""
    before = [s.lag for s in samples if fault_at - 15 <= s.t < fault_at and s.lag is not None]
    baseline = statistics.median(before) if before else 0.0
    level = max(before) if before else 0.0
    recovery = next(
        (s.t - healed_at for s in samples if s.t >= healed_at and s.lag is not None and s.lag <= max(level, 1)), None
    )
    during = [s for s in samples if s.t >= fault_at]
    not_ready = sum(0.5 for s in during if s.ready is False)
    false_after = next((s.t - fault_at for s in during if s.ready is False), None)
    again = None
    if false_after is not None:
        again = next((s.t - healed_at for s in samples if s.t >= healed_at and s.ready), None)
    return {
        "baseline": baseline,
        "recovery": recovery,
        "not_ready": not_ready,
        "false_after": false_after,
        "again": again,
    }


def scrape(worker: WorkerProcess, names: tuple[str, ...]) -> dict[str, float]:
    """Sums of the named counters and gauges on a worker's /metrics (0 when it does not answer)."""
    url = f"http://{worker.probe_host}:{worker.settings.metrics_port}/metrics"
    out = dict.fromkeys(names, 0.0)
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            text = response.read().decode()
    except OSError:
        return out
    for line in text.splitlines():
        for name in names:
            if line.startswith(name) and not line.startswith("#"):
                with contextlib.suppress(ValueError):
                    out[name] += float(line.rsplit(" ", 1)[1])
    return out


async def duplicates(settings: Settings) -> int:
    """Records on the output topic beyond one per image id (at-least-once allows them; they are counted)."""
    records = await read_records(settings.broker_url, settings.output_topic, timeout_s=3)
    seen: dict[str, int] = {}
    for record in records:
        if not record.value:
            continue
        image_id = str(orjson.loads(record.value).get("image_id"))
        seen[image_id] = seen.get(image_id, 0) + 1
    return sum(n - 1 for n in seen.values())


async def wait_zero_lag(settings: Settings, timeout_s: float) -> int:
    """The group's lag once it reaches zero, or the last reading after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    lag: dict[int, int] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            lag = await group_lag(settings.broker_url, settings.consumer_group, settings.input_topic)
            if lag and not any(lag.values()):
                return 0
        await asyncio.sleep(1)
    return sum(lag.values()) if lag else -1
