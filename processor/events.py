"""The contracts: input events, classification events and dead-letter records.

Everything here is total on hostile input: parsing raises only InvalidEvent, and a dead letter
serialises whatever it carries (the original event as JSON when it is small and re-serialisable,
else its raw bytes, base64, truncated to ``DLQ_RAW_LIMIT``).
"""

from __future__ import annotations

import base64
import re
import unicodedata
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from . import contracts
from .errors import InvalidEvent

# Output ids are uuid5 in this namespace, so a replay yields the same id.
OUTPUT_NAMESPACE = uuid.UUID("6f1d3c0e-52b5-4a53-9d0e-5d1b8d9c1a77")
# What a classification record carries about its processing rather than its result: left out of
# result_id, so a replay (other timings, a cache hit, a later offset) has the id of the first.
PROCESSING_FIELDS = frozenset({"event_id", "result_id", "cache", "timings_ms", "classified_at", "source"})
DLQ_RAW_LIMIT = 16 * 1024  # bytes of the original event a dead letter carries at most
DETAIL_LIMIT = 2000


class ImageEvent(BaseModel):
    """An event of the ``images`` topic: an image to classify, or (``deleted: true``, no url needed)
    the removal of an image from its listing."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    image_id: str = Field(min_length=1, max_length=256)
    listing_id: str = Field(min_length=1, max_length=256)
    deleted: bool = False  # before url: the url check reads it
    url: str = Field("", max_length=4096, validate_default=True)
    position_index: int | None = Field(None, ge=0, le=10_000)
    event_time: datetime | None = None

    @field_validator("url")
    @classmethod
    def _url_unless_deleted(cls, url: str, info: ValidationInfo) -> str:
        if not url and not info.data.get("deleted", False):
            raise ValueError("Field required (unless deleted is true)")
        return url


@dataclass(frozen=True, slots=True)
class Envelope:
    """An input message as the broker delivered it; the pipeline core never sees Faust."""

    value: bytes
    topic: str = ""
    partition: int = -1
    offset: int = -1
    timestamp_ms: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()

    def source(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}

    def correlation_id(self) -> str:
        """The correlation id its output records carry (contracts.correlation_id)."""
        return contracts.correlation_id(self.headers, self.topic, self.partition, self.offset)

    def describe(self) -> str:
        """Where the message came from, for logs (never its content)."""
        return f"{clean_text(self.topic, 200)}/{self.partition}@{self.offset}"


@dataclass(frozen=True, slots=True)
class EventLimits:
    """What an input event may be: its size and how far its event_time may lie from now."""

    max_bytes: int = 64 * 1024
    max_past: timedelta = timedelta(days=3650)
    max_future: timedelta = timedelta(minutes=5)


def parse_event(raw: bytes, limits: EventLimits) -> ImageEvent:
    """Validate one raw message, raising InvalidEvent with a readable reason (never anything else)."""
    if len(raw) > limits.max_bytes:
        raise InvalidEvent(f"event is {len(raw)} bytes, over the {limits.max_bytes}-byte limit")
    try:
        event = ImageEvent.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'event'}: {err['msg']}" for err in exc.errors())
        raise InvalidEvent(clean_text(problems, 1000)) from None
    except (ValueError, RecursionError) as exc:  # pydantic's own limits (nesting depth, sizes)
        raise InvalidEvent(f"event cannot be parsed: {type(exc).__name__}") from None
    for name in ("image_id", "listing_id", "url"):
        if _has_controls(getattr(event, name)):
            raise InvalidEvent(f"{name}: must not contain control or format characters")
    if event.event_time is None:
        return event
    return event.model_copy(update={"event_time": _bounded_time(event.event_time, limits)})


def _bounded_time(moment: datetime, limits: EventLimits) -> datetime:
    """event_time in UTC, inside [now - max_past, now + max_future]."""
    if moment.tzinfo is None:
        raise InvalidEvent("event_time: must carry a UTC offset (RFC 3339)")
    try:
        utc = moment.astimezone(UTC)
    except (OverflowError, ValueError):
        raise InvalidEvent("event_time: outside the representable range once converted to UTC") from None
    now = datetime.now(UTC)
    if not now - limits.max_past <= utc <= now + limits.max_future:
        raise InvalidEvent(
            f"event_time: {_rfc3339(utc)} is outside the accepted window "
            f"({limits.max_past.days} days back, {int(limits.max_future.total_seconds())} s ahead)"
        )
    return utc


def _has_controls(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf") for ch in text)


_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def clean_text(text: str, limit: int) -> str:
    """Text safe for logs, keys and Postgres: control and bidi characters replaced, length capped."""
    return _CONTROLS.sub("\ufffd", text[:limit])


def version_key(version: str) -> tuple[int, ...]:
    """A model version as a tuple of integers (``2026.11.30.10`` > ``2026.11.30.9``); non-digits ignored."""
    return tuple(int(digits) if (digits := re.sub(r"\D", "", part)) else 0 for part in version.split("."))


@dataclass(slots=True)
class Classification:
    """A classified image, ready for the sinks."""

    event: ImageEvent
    envelope: Envelope
    has_banner: bool
    banner_score: float
    banner_threshold: float
    position: str
    position_scores: dict[str, float]
    model_name: str
    model_version: str
    content_hash: str
    width: int
    height: int
    event_time: datetime
    cache: str = "miss"  # miss | url | hash | revalidated
    timings_ms: dict[str, float] = field(default_factory=dict)
    etag: str | None = None  # the URL's validators, for the cache (not part of the output)
    last_modified: str | None = None
    classified_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    model_generation: int = 0  # the registry's promotion order of the model (0: not from the registry)

    @property
    def model_key(self) -> str:
        """The model that made it, as cache keys name it."""
        return f"{self.model_name}:{self.model_version}"

    def order_key(self) -> tuple[datetime, bool, int, tuple[int, ...]]:
        """Which of two outcomes for one image is newer (the store's rule): for one event, the model
        promoted last wins (a rollback), then the higher version."""
        return (self.event_time, False, self.model_generation, version_key(self.model_version))

    @property
    def output_id(self) -> str:
        """The record's ``result_id`` (stored as ``output_id``)."""
        return str(self.to_output()["result_id"])

    @property
    def classification_id(self) -> str:
        """Same image, content and model give the same id, whatever its position or event time."""
        name = f"{self.event.image_id}|{self.content_hash}|{self.model_name}|{self.model_version}"
        return str(uuid.uuid5(OUTPUT_NAMESPACE, name))

    def to_output(self) -> dict[str, Any]:
        """The ``image-classifications`` event (schemas/image-classification.schema.json): ``result_id``
        changes when anything but the processing fields changes; ``event_id`` is its older name."""
        record = self._result()
        result_id = contracts.record_id(
            "classification", {k: v for k, v in record.items() if k not in PROCESSING_FIELDS}
        )
        return {
            "schema_version": contracts.IMAGE_CLASSIFICATION.version,
            "result_id": result_id,
            "event_id": result_id,
            **record,
        }

    def _result(self) -> dict[str, Any]:
        return {
            "classification_id": self.classification_id,
            "image_id": self.event.image_id,
            "listing_id": self.event.listing_id,
            "url": self.event.url,
            "position_index": self.event.position_index,
            "has_banner": self.has_banner,
            "banner_score": round(self.banner_score, 6),
            "banner_threshold": self.banner_threshold,
            "position": self.position,
            "position_scores": {k: round(v, 6) for k, v in self.position_scores.items()},
            "model": {"name": self.model_name, "version": self.model_version, "generation": self.model_generation},
            "content_hash": self.content_hash,
            "image": {"width": self.width, "height": self.height},
            "cache": self.cache,
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
            "event_time": _rfc3339(self.event_time),
            "classified_at": _rfc3339(self.classified_at),
            "source": self.envelope.source(),
        }


@dataclass(slots=True)
class DeadLetter:
    """An event that cannot be classified, with the reason."""

    envelope: Envelope
    kind: str
    detail: str
    attempts: int = 1
    image_id: str | None = None
    listing_id: str | None = None
    failed_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def original(self) -> dict[str, Any]:
        """The original event: ``{"event": parsed JSON}`` when it is small, re-serialises and is not
        ``null``, else ``{"event": None, "event_raw": {base64 of at most DLQ_RAW_LIMIT bytes, size, truncated}}``."""
        raw = self.envelope.value
        if len(raw) <= DLQ_RAW_LIMIT:
            try:
                parsed = orjson.loads(raw)
                if parsed is not None and len(orjson.dumps(parsed)) <= DLQ_RAW_LIMIT:
                    return {"event": parsed}
            except (orjson.JSONDecodeError, orjson.JSONEncodeError, RecursionError):
                pass
        kept = raw[:DLQ_RAW_LIMIT]
        return {
            "event": None,
            "event_raw": {
                "base64": base64.b64encode(kept).decode(),
                "bytes": len(raw),
                "truncated": len(kept) < len(raw),
            },
        }

    def to_output(self) -> dict[str, Any]:
        """The ``images-dlq`` record (schemas/dead-letter.schema.json); ``dead_letter_id`` names the input
        offset, as the dead-letter table's key does, so a replay has the id of the first."""
        return {
            "schema_version": contracts.DEAD_LETTER.version,
            "dead_letter_id": contracts.record_id("dead-letter", self.envelope.source()),
            **self.original(),
            "image_id": self.image_id,
            "listing_id": self.listing_id,
            "error": {"kind": self.kind, "detail": clean_text(self.detail, DETAIL_LIMIT)},
            "attempts": self.attempts,
            "failed_at": _rfc3339(self.failed_at),
            "source": self.envelope.source(),
        }


@dataclass(slots=True)
class Deletion:
    """An image removed from its listing: stored as a tombstone row, published as a removal."""

    event: ImageEvent
    envelope: Envelope
    event_time: datetime

    def order_key(self) -> tuple[datetime, bool, int, tuple[int, ...]]:
        return (self.event_time, True, 0, ())

    def to_output(self) -> dict[str, Any]:
        """The ``image-removals`` record (schemas/image-removal.schema.json)."""
        removal = {
            "image_id": self.event.image_id,
            "listing_id": self.event.listing_id,
            "deleted": True,
            "event_time": _rfc3339(self.event_time),
        }
        return {
            "schema_version": contracts.IMAGE_REMOVAL.version,
            "result_id": contracts.record_id("removal", removal),
            **removal,
            "source": self.envelope.source(),
        }


Outcome = Classification | DeadLetter | Deletion


def best_effort_ids(raw: bytes) -> dict[str, str]:
    """image_id and listing_id of an invalid event when they are usable strings (for accounting)."""
    try:
        doc = orjson.loads(raw)
    except (orjson.JSONDecodeError, RecursionError):
        return {}
    if not isinstance(doc, dict):
        return {}
    return {
        k: v
        for k in ("image_id", "listing_id")
        if isinstance(v := doc.get(k), str) and 0 < len(v) <= 256 and not _has_controls(v)
    }


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def event_time_of(event: ImageEvent, envelope: Envelope) -> datetime:
    """The event's own time, else the broker's timestamp (stable across replays)."""
    if event.event_time is not None:
        return event.event_time
    if envelope.timestamp_ms is not None:
        return datetime.fromtimestamp(envelope.timestamp_ms / 1000, UTC)
    return datetime.now(UTC)
