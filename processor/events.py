"""The contracts: input events, classification events and dead-letter records."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import InvalidEvent

# Output ids are uuid5 in this namespace, so a replay yields the same id.
OUTPUT_NAMESPACE = uuid.UUID("6f1d3c0e-52b5-4a53-9d0e-5d1b8d9c1a77")


class ImageEvent(BaseModel):
    """An event of the ``images`` topic."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    image_id: str = Field(min_length=1, max_length=256)
    listing_id: str = Field(min_length=1, max_length=256)
    url: str = Field(min_length=1, max_length=4096)
    position_index: int | None = Field(None, ge=0, le=10_000)
    event_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class Envelope:
    """An input message as the broker delivered it; the pipeline core never sees Faust."""

    value: bytes
    topic: str = ""
    partition: int = -1
    offset: int = -1
    timestamp_ms: int | None = None

    def source(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}


def parse_event(raw: bytes, max_bytes: int) -> ImageEvent:
    """Validate one raw message, raising InvalidEvent with a readable reason."""
    if len(raw) > max_bytes:
        raise InvalidEvent(f"event is {len(raw)} bytes, over the {max_bytes}-byte limit")
    try:
        event = ImageEvent.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'event'}: {err['msg']}" for err in exc.errors())
        raise InvalidEvent(problems[:1000]) from None
    if "\x00" in event.image_id + event.listing_id + event.url:
        raise InvalidEvent("image_id, listing_id and url must not contain NUL characters")
    if event.event_time is not None and event.event_time.tzinfo is None:
        raise InvalidEvent("event_time: must carry a UTC offset (RFC 3339)")
    return event


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
    cache: str = "miss"  # miss | url | hash
    timings_ms: dict[str, float] = field(default_factory=dict)
    classified_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def output_id(self) -> str:
        """Same image, content and model give the same id: duplicates are recognisable."""
        name = f"{self.event.image_id}|{self.content_hash}|{self.model_name}|{self.model_version}"
        return str(uuid.uuid5(OUTPUT_NAMESPACE, name))

    def to_output(self) -> dict[str, Any]:
        """The ``image-classifications`` event (schemas/image-classification.schema.json)."""
        return {
            "event_id": self.output_id,
            "image_id": self.event.image_id,
            "listing_id": self.event.listing_id,
            "url": self.event.url,
            "position_index": self.event.position_index,
            "has_banner": self.has_banner,
            "banner_score": round(self.banner_score, 6),
            "banner_threshold": self.banner_threshold,
            "position": self.position,
            "position_scores": {k: round(v, 6) for k, v in self.position_scores.items()},
            "model": {"name": self.model_name, "version": self.model_version},
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

    def original(self) -> Any:
        """The original event: parsed JSON when it parses, else its text."""
        try:
            return orjson.loads(self.envelope.value)
        except orjson.JSONDecodeError:
            return self.envelope.value.decode("utf-8", "replace")[:65536]

    def to_output(self) -> dict[str, Any]:
        """The ``images-dlq`` record."""
        return {
            "event": self.original(),
            "image_id": self.image_id,
            "listing_id": self.listing_id,
            "error": {"kind": self.kind, "detail": self.detail[:2000]},
            "attempts": self.attempts,
            "failed_at": _rfc3339(self.failed_at),
            "source": self.envelope.source(),
        }


Outcome = Classification | DeadLetter


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def event_time_of(event: ImageEvent, envelope: Envelope) -> datetime:
    """The event's own time, else the broker's timestamp (stable across replays)."""
    if event.event_time is not None:
        return event.event_time
    if envelope.timestamp_ms is not None:
        return datetime.fromtimestamp(envelope.timestamp_ms / 1000, UTC)
    return datetime.now(UTC)
