"""In-memory twins of the sink's collaborators (result store, publisher, cache), so the pipeline core
runs without any server, as FastStream tests a handler with an in-memory broker. Each keeps what it
was given for tests to inspect, and can be told to fail its next calls, like an outage."""

from __future__ import annotations

from collections.abc import Sequence

from ..cache import CachedResult
from ..events import Classification, DeadLetter, Deletion, Outcome
from ..sink import Record
from ..store import latest_per_image


class Outage:
    """Makes the next ``failures`` calls raise ConnectionError."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures

    def check(self, what: str) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError(f"{what} unavailable")


class MemoryPublisher(Outage):
    """A broker that confirms every record at once."""

    def __init__(self, failures: int = 0) -> None:
        super().__init__(failures)
        self.records: list[Record] = []

    async def publish(self, records: Sequence[Record]) -> None:
        self.check("broker")
        self.records.extend(records)


class MemoryStore(Outage):
    """The results table: one row per image, replaced by an outcome that is not older (store.py's rule)."""

    def __init__(self, failures: int = 0) -> None:
        super().__init__(failures)
        self.rows: dict[str, Classification | Deletion] = {}
        self.dead: list[DeadLetter] = []

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def migrate(self) -> int:
        return 1

    async def ping(self) -> bool:
        return not self.failures

    async def write(self, outcomes: Sequence[Outcome]) -> set[str]:
        self.check("database")
        applied = set()
        for o in latest_per_image(o for o in outcomes if not isinstance(o, DeadLetter)):
            old = self.rows.get(o.event.image_id)
            if old is None or old.order_key() <= o.order_key():
                self.rows[o.event.image_id] = o
                applied.add(o.event.image_id)
        self.dead.extend(o for o in outcomes if isinstance(o, DeadLetter))
        return applied


class MemoryCache:
    """A dict by (URL, model) and by (content hash, model), without expiry."""

    def __init__(self) -> None:
        self.by_url: dict[tuple[str, str], CachedResult] = {}
        self.by_hash: dict[tuple[str, str], CachedResult] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def get_url(self, url: str, model: str) -> CachedResult | None:
        return self.by_url.get((url, model))

    async def get_hash(self, content_hash: str, model: str) -> CachedResult | None:
        return self.by_hash.get((content_hash, model))

    async def put_many(self, entries: list[tuple[str, str, CachedResult]]) -> None:
        for url, model, result in entries:
            self.by_url[url, model] = result
            self.by_hash[result.content_hash, model] = result
