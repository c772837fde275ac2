"""How long a consumer fetch may wait at the broker: short at the log end, longer while behind it.

A fetch that finds no new records waits at the broker up to its max wait for some to arrive, so a short
wait (``broker_fetch_max_wait_ms``, 50 ms) keeps the latency of new events low. But Tansu also bounds
every storage read of a fetch by that wait, and on S3 storage a read of older records takes longer, the
longer the partition: the fetch comes back empty with a high watermark above the position, again and
again, so a partition that fell behind its log end never catches up (#25: two partitions stalled for good
after a slow CDN or a slow network put them behind). Measured on one partition of single-record batches:
400 records, 50 ms read 17 in 40 s and 500 ms all in 2 s; 4,000 records, 500 ms read 58 in 40 s.

So before each fetch ``FetchWait`` chooses the wait: ``short_ms`` when no partition the fetch asks for
was behind its high watermark at the last fetch; ``behind_ms`` while one is. A behind fetch that takes
its whole wait was cut short by the broker's deadline (there was more to read), so the wait doubles, up
to ``max_ms``; one answered within a quarter of its wait halves it again, down to ``behind_ms``; it starts
from ``behind_ms`` once every partition is at its log end. Behind, records are there and the broker
answers once it has read them, so a longer wait costs the partition no latency. Apache Kafka answers as
soon as it has records, so there the wait stays at ``behind_ms`` and never matters.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Container
from typing import Any

log = logging.getLogger(__name__)
DEADLINE_SHARE = 0.9  # a behind fetch that took this share of its wait or more ran into the broker's deadline
MAX_DOUBLINGS = 3  # the wait while behind grows to behind_ms * 2**3 at most (and half the request timeout)


def lagging(assignment: Any, pending: Container[Any]) -> dict[Any, int]:
    """The position of each partition the next fetch asks for (assigned, not paused, no fetched records
    waiting to be consumed) that was behind its high watermark at the last fetch."""
    behind = {}
    for tp in assignment.tps:
        state = assignment.state_value(tp)
        if tp in pending or state.paused or not state.has_valid_position or state.highwater is None:
            continue
        if state.position < state.highwater:
            behind[tp] = state.position
    return behind


class FetchWait:
    """Chooses the max wait of each fetch (see the module docstring)."""

    def __init__(self, short_ms: int, behind_ms: int, max_ms: int) -> None:
        self.short_ms = short_ms
        self.behind_ms = behind_ms
        self.max_ms = max(max_ms, behind_ms)
        self.wait_ms = behind_ms  # the wait while behind

    def choose(self, assignment: Any, pending: Container[Any]) -> tuple[int, bool]:
        """The wait of the next fetch, and whether a partition it asks for is behind."""
        if lagging(assignment, pending):
            return self.wait_ms, True
        if not pending:  # every partition at its log end: the next lag starts from behind_ms
            self.wait_ms = self.behind_ms
        return self.short_ms, False

    def fetched(self, wait_ms: int, behind: bool, elapsed_s: float) -> None:
        """A fetch sent with ``wait_ms`` came back after ``elapsed_s``; only behind ones at the current wait count."""
        if not behind or wait_ms != self.wait_ms:
            return
        if elapsed_s * 1000 >= DEADLINE_SHARE * wait_ms and wait_ms < self.max_ms:
            self.wait_ms = min(wait_ms * 2, self.max_ms)
            log.info("fetch wait raised to %d ms: the broker ran out of time reading older records", self.wait_ms)
        elif elapsed_s * 1000 < wait_ms / 4 and wait_ms > self.behind_ms:
            self.wait_ms = max(wait_ms // 2, self.behind_ms)


def adapt_fetch_wait(fetcher: Any, wait: FetchWait) -> None:
    """Make aiokafka's ``fetcher`` (a started consumer's ``_fetcher``) choose its max wait before each fetch,
    and tell ``wait`` how long each took.

    aiokafka builds every fetch request in ``Fetcher._get_actions_per_node`` from ``_fetch_max_wait_ms`` and
    sends each in ``Fetcher._proc_fetch_request``: private interfaces (aiokafka 0.14), so tests/test_fetchwait.py
    runs them against the real broker.
    """
    plan: Callable[[Any], Any] = fetcher._get_actions_per_node
    proc: Callable[[Any, Any, Any], Awaitable[bool]] = fetcher._proc_fetch_request
    sent: dict[int, tuple[int, bool]] = {}  # by id() of each request built and not sent yet

    def actions(assignment: Any) -> Any:
        wait_ms, behind = wait.choose(assignment, fetcher._records)
        fetcher._fetch_max_wait_ms = wait_ms
        planned = plan(assignment)
        for _node, request in planned[0]:
            sent[id(request)] = (wait_ms, behind)
        return planned

    async def fetch(assignment: Any, node_id: Any, request: Any) -> bool:
        wait_ms, behind = sent.pop(id(request), (0, False))
        started = time.monotonic()
        try:
            return await proc(assignment, node_id, request)
        finally:
            wait.fetched(wait_ms, behind, time.monotonic() - started)

    fetcher._get_actions_per_node = actions
    fetcher._proc_fetch_request = fetch
