"""The fault harness (#25, ``make faults``): a worker in a network namespace of its own, on a live stream,
through broker kills, long outages, partitions to the broker, Postgres and Redis, a slow lossy network
and a CDN that drips bytes. Each scenario ends with every event accounted for (a row or a dead letter)
and zero lag, and records what recovery took and what the operator saw (processor.dev.faults).

Marked ``faults`` (not in ``make test``); needs root. FAULTS_ONLY=name,name runs some scenarios,
FAULTS_RESULTS=path writes the outcomes as JSON (the table in docs/operations/faults.md comes from it),
FAULTS_SLOW_S sets how long the slow-network scenario lasts (default 60 s), FAULTS_KEEP=1 keeps the lab's
folder (stack data, worker logs per scenario).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from processor.dev import faults
from processor.dev.faults import Lab, Observer, Outcome, Stream
from processor.dev.harness import WorkerProcess, isolated_settings, wait_ready
from processor.dev.stack import StackUrls
from processor.settings import Settings

pytestmark = [
    pytest.mark.faults,
    pytest.mark.timeout(900),
    pytest.mark.skipif(faults.can_run() is not None, reason=faults.can_run() or ""),
]
RATE = 8.0  # events per second
WARM_S = 12.0
SLOW_S = float(os.environ.get("FAULTS_SLOW_S", "60"))
METRICS = (
    "processor_broker_outages_total",
    "processor_commit_failures_total",
    "processor_client_log_lines_held_total",
    "processor_store_retries_total",
    "processor_cache_errors_total",
    "processor_dead_letters_total",
)
RESULTS: list[Outcome] = []


@dataclass
class Run:
    """One scenario's running parts, handed to its fault and heal steps."""

    lab: Lab
    settings: Settings
    tmp: Path
    workers: list[WorkerProcess] = field(default_factory=list)
    restarts: int = 0
    slow_share: float = 0.0
    notes: list[str] = field(default_factory=list)

    def start_worker(self, inside: bool = True) -> WorkerProcess:
        worker = self.lab.worker(self.settings, self.tmp / f"worker-{len(self.workers)}.log", inside)
        self.workers.append(worker)
        return worker


Step = Callable[[Run], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    name: str
    fault: str
    hold_s: float
    inject: Step
    heal: Step
    overrides: dict[str, Any] = field(default_factory=dict)
    inside_workers: int = 1
    host_worker: bool = False


async def _kill_broker(run: Run) -> None:
    assert run.lab.stack is not None
    run.lab.stack.kill_broker()


async def _start_broker(run: Run) -> None:
    assert run.lab.stack is not None
    await asyncio.to_thread(run.lab.stack.start_broker)


async def _kill_broker_and_a_worker(run: Run) -> None:
    await _kill_broker(run)
    run.workers[-1].stop(signal.SIGKILL)


async def _start_broker_and_a_worker(run: Run) -> None:
    await _start_broker(run)
    run.start_worker()  # joins the group: a rebalance right after the broker came back
    run.restarts += 1


def _partition(link: str) -> Step:
    async def step(run: Run) -> None:
        run.lab.network.partition(link)

    return step


def _heal(*links: str) -> Step:
    async def step(run: Run) -> None:
        for link in links:
            run.lab.network.heal(link)

    return step


async def _slow_links(run: Run) -> None:
    run.notes += run.lab.slow(("cdn", "broker"), delay_ms=200, loss_pct=5)


async def _fast_links(run: Run) -> None:
    run.lab.unslow(("cdn", "broker"))


async def _slow_cdn(run: Run) -> None:
    run.slow_share = 0.1


async def _fast_cdn(run: Run) -> None:
    run.slow_share = 0.0


SHORT_TIMEOUTS = {"producer_request_timeout_s": 5, "broker_request_timeout_s": 6, "broker_probe_timeout_s": 2}
SCENARIOS = [
    Scenario("broker-kill", "broker SIGKILL, restarted after 10 s", 10, _kill_broker, _start_broker),
    Scenario(
        "broker-kill-rebalance",
        "broker SIGKILL; one of two workers SIGKILLed while it is down; broker back after 10 s, the worker rejoins",
        10,
        _kill_broker_and_a_worker,
        _start_broker_and_a_worker,
        inside_workers=2,
    ),
    Scenario(
        "broker-outage-long",
        "broker down 45 s, past every client timeout (request 6 s, producer 5 s, session 6 s)",
        45,
        _kill_broker,
        _start_broker,
        SHORT_TIMEOUTS,
    ),
    Scenario(
        "broker-partition",
        "worker-broker link drops every packet for 25 s (session timeout 6 s); a second worker outside takes over",
        25,
        _partition("broker"),
        _heal("broker"),
        host_worker=True,
    ),
    Scenario(
        "postgres-partition",
        "worker-Postgres link drops every packet for 25 s",
        25,
        _partition("postgres"),
        _heal("postgres"),
    ),
    Scenario(
        "redis-partition", "worker-Redis link drops every packet for 25 s", 25, _partition("redis"), _heal("redis")
    ),
    Scenario(
        "slow-network",
        f"200 ms more round trip and 5 % loss each way on the CDN and broker links for {SLOW_S:.0f} s",
        SLOW_S,
        _slow_links,
        _fast_links,
    ),
    Scenario(
        "slow-cdn",
        "10 % of new image URLs drip one byte a second for 30 s (fetch_total_timeout_s 15 s, 4 attempts)",
        30,
        _slow_cdn,
        _fast_cdn,
    ),
]
ONLY = {name for name in os.environ.get("FAULTS_ONLY", "").split(",") if name}


@pytest.fixture(scope="module")
async def lab(jpegs: dict[str, bytes]) -> AsyncIterator[Lab]:
    # A folder of its own: pytest prunes its old temporary folders while other sessions run, and this one
    # holds the stack's Postgres data for the whole module.
    lab = Lab(Path(tempfile.mkdtemp(prefix="processor-faults-")), jpegs)
    try:
        await lab.start()
        yield lab
    finally:
        await lab.stop()
        if not os.environ.get("FAULTS_KEEP"):
            shutil.rmtree(lab.root, ignore_errors=True)
        path = os.environ.get("FAULTS_RESULTS")
        if path and RESULTS:
            text = json.dumps([dataclasses.asdict(r) for r in RESULTS], indent=2)
            await asyncio.to_thread(Path(path).write_text, text)
        print("\n" + faults.TABLE_HEADER + "\n" + "\n".join(r.row() for r in RESULTS))


async def accounted(settings: Settings, ids: set[str], timeout_s: float) -> tuple[int, int]:
    """Rows and dead letters among ``ids`` once all are there (or at the timeout)."""
    deadline = time.monotonic() + timeout_s
    conn = await asyncpg.connect(settings.postgres_dsn)
    try:
        rows: set[str] = set()
        dead: set[str] = set()
        while time.monotonic() < deadline:
            rows = {r["image_id"] for r in await conn.fetch(f'SELECT image_id FROM "{settings.postgres_table}"')}
            dead = {
                r["image_id"]
                for r in await conn.fetch(
                    "SELECT image_id FROM image_dead_letters WHERE source_topic = $1", settings.input_topic
                )
            }
            if ids <= rows | dead:
                break
            await asyncio.sleep(1)
        return len(ids & (rows | dead)), len(ids & dead)
    finally:
        await conn.close()


def log_lines(workers: list[WorkerProcess]) -> int:
    return sum(len(w.log().splitlines()) for w in workers)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
async def test_fault(scenario: Scenario, lab: Lab, jpegs: dict[str, bytes]) -> None:
    if ONLY and scenario.name not in ONLY:
        pytest.skip("not in FAULTS_ONLY")
    urls = StackUrls(lab.broker_url, lab.postgres_dsn, lab.redis_url)
    settings = isolated_settings(
        urls,
        scenario.name,
        topic_partitions=4,
        allow_networks=f"{faults.SUBNET}.0.0/16",
        broker_probe_interval_s=1,
        monitor_interval_s=2,
        **scenario.overrides,
    )
    logs = lab.root / scenario.name
    logs.mkdir()
    run = Run(lab, settings, logs)
    names = sorted(jpegs)

    def url_of(n: int) -> str:
        name = names[n % len(names)]
        if run.slow_share and n % round(1 / run.slow_share) == 0:
            return f"{lab.cdn_url}/slow/{name}?bytes=1&every=1&v={n}"
        return f"{lab.cdn_url}/img/{name}?v={n}"

    stream = Stream(settings, url_of, RATE)
    await stream.start()
    for _ in range(scenario.inside_workers):
        run.start_worker()
    if scenario.host_worker:
        run.start_worker(inside=False)
    try:
        await wait_ready(run.workers, timeout_s=180)
        outcome = await measure(scenario, run, stream)
    finally:
        await stream.stop()
        for worker in run.workers:
            worker.stop(signal.SIGTERM, 15)
    RESULTS.append(outcome)
    assert outcome.accounted == outcome.events, f"{outcome.events - outcome.accounted} events have no outcome"
    assert outcome.final_lag == 0, f"lag {outcome.final_lag} at the end"
    assert outcome.workers_alive, "a worker exited on its own"


async def measure(scenario: Scenario, run: Run, stream: Stream) -> Outcome:
    """Warm up, inject, hold, heal; stream until the lag is back at its level; then account for every event."""
    settings = run.settings
    observer = Observer(settings, stream, lambda: [w for w in run.workers if w.proc.poll() is None][:1])
    await observer.start()
    await asyncio.sleep(WARM_S)
    lines_before = log_lines(run.workers)
    fault_at = time.monotonic()
    await scenario.inject(run)
    await asyncio.sleep(scenario.hold_s)
    await scenario.heal(run)
    healed_at = time.monotonic()
    while time.monotonic() < healed_at + 120:  # the stream goes on until the lag is back at its level
        await asyncio.sleep(1)
        recovered = faults.summarise(observer.samples, fault_at, healed_at)["recovery"] is not None
        if recovered and time.monotonic() - healed_at > 10:
            break
    await stream.stop()
    events, dead = await accounted(settings, stream.ids, timeout_s=240)
    final_lag = await faults.wait_zero_lag(settings, timeout_s=120)
    await observer.stop()
    summary = faults.summarise(observer.samples, fault_at, healed_at)
    metrics: dict[str, float] = {}
    for worker in run.workers:
        if worker.proc.poll() is None:
            for name, value in faults.scrape(worker, METRICS).items():
                metrics[name] = metrics.get(name, 0.0) + value
    return Outcome(
        name=scenario.name,
        fault=scenario.fault,
        fault_s=healed_at - fault_at,
        events=len(stream.ids),
        accounted=events,
        dead_letters=dead,
        duplicates=await faults.duplicates(settings),
        final_lag=final_lag,
        baseline_lag=summary["baseline"],
        recovery_s=summary["recovery"],
        not_ready_s=summary["not_ready"],
        ready_false_after_s=summary["false_after"],
        ready_again_after_s=summary["again"],
        log_lines=log_lines(run.workers) - lines_before,
        metrics=metrics,
        workers_alive=all(w.proc.poll() is None for w in run.workers if w.proc.returncode != -signal.SIGKILL),
        restarts=run.restarts,
        notes=run.notes,
    )
