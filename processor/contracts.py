"""The output contracts: one JSON Schema per topic, the version every record names, its Kafka headers,
and the rules a schema change must follow (docs/architecture/consumer-guide.md).

Every record of an output topic carries ``schema_version`` in its value (tombstones have none) and
these headers::

    content-type     application/json
    schema-id        the schema's $id, which ends in its version
    schema-version   e.g. 1.0.0
    correlation-id   the input's correlation-id header, else a uuid5 of where the input sat in Kafka
    revision         listing-updates only (tombstones too): the listing's change counter

Compatibility (``incompatibilities``): a new version of a schema must accept every record the last
released one accepted, and keep every field an old consumer needs. So no required field is added or
removed, no type or format narrowed or changed, no enum value removed (``position``, ``cache``,
``hero.rule``, ``hero.reason``, ``error.kind``), no closed object (``additionalProperties: false``).
New optional fields and new enum values are minor versions; a consumer must tolerate both (an
unknown ``position`` counts as ``unsure``, an unknown ``error.kind`` as a failure of that image).
Anything else is a new major version, published beside the old one, never in place.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import orjson

SCHEMA_DIR = Path(__file__).parent / "schemas"
RELEASED_DIR = SCHEMA_DIR / "released"  # the schemas of the last release, for the compatibility check
CONTENT_TYPE = b"application/json"
CORRELATION_HEADER = "correlation-id"
MAX_CORRELATION_ID = 128  # characters of an incoming correlation id kept; longer ones are replaced
# Ids of records (result_id, correlation ids) are uuid5 in this namespace: a replay yields the same id.
RECORD_NAMESPACE = uuid.UUID("0b7c8f4e-2f1d-5a8e-9c1b-4d6e8f0a2b3c")

Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class Schema:
    """One topic's contract: its schema file, ``$id`` and version."""

    name: str  # the file is schemas/<name>.schema.json
    version: str

    @property
    def path(self) -> Path:
        return SCHEMA_DIR / f"{self.name}.schema.json"

    @property
    def id(self) -> str:
        return f"https://github.com/listing-image-processor/schemas/{self.name}/{self.version}.schema.json"

    def headers(self, correlation_id: str, **extra: str) -> Headers:
        """The Kafka headers of a record of this schema."""
        fixed = (
            ("content-type", CONTENT_TYPE),
            ("schema-id", self.id.encode()),
            ("schema-version", self.version.encode()),
            (CORRELATION_HEADER, correlation_id.encode()),
        )
        return fixed + tuple((k, v.encode()) for k, v in extra.items())


IMAGE_CLASSIFICATION = Schema("image-classification", "1.0.0")
IMAGE_REMOVAL = Schema("image-removal", "1.0.0")
DEAD_LETTER = Schema("dead-letter", "1.0.0")
LISTING_UPDATE = Schema("listing-update", "1.0.0")
SCHEMAS = (IMAGE_CLASSIFICATION, IMAGE_REMOVAL, DEAD_LETTER, LISTING_UPDATE)


def record_id(kind: str, content: Mapping[str, Any]) -> str:
    """A uuid5 of a record's content (canonical JSON): equal content, equal id."""
    return str(uuid.uuid5(RECORD_NAMESPACE, kind + "|" + orjson.dumps(content, option=orjson.OPT_SORT_KEYS).decode()))


def correlation_id(headers: Sequence[tuple[str, bytes]], topic: str, partition: int, offset: int) -> str:
    """The input's own correlation id when it sent a usable one, else one derived from where it sat in
    Kafka (the same on every replay)."""
    for key, value in headers:
        if key.lower() == CORRELATION_HEADER:
            try:
                text = value.decode()
            except UnicodeDecodeError:
                break
            if 0 < len(text) <= MAX_CORRELATION_ID and text.isprintable():
                return text
            break
    return str(uuid.uuid5(RECORD_NAMESPACE, f"input|{topic}|{partition}|{offset}"))


@cache
def load(schema: Schema) -> dict[str, Any]:
    """The schema document of a contract."""
    doc: dict[str, Any] = orjson.loads(schema.path.read_bytes())
    return doc


def incompatibilities(old: Mapping[str, Any], new: Mapping[str, Any], where: str = "") -> list[str]:
    """What in ``new`` breaks the compatibility rules (module docstring) against ``old``; empty when none."""
    problems: list[str] = []
    here = where or "record"
    old_required, new_required = set(old.get("required", ())), set(new.get("required", ()))
    problems += [f"{here}: required field {f!r} removed" for f in sorted(old_required - new_required)]
    problems += [f"{here}: required field {f!r} added" for f in sorted(new_required - old_required)]
    old_types, new_types = _types(old), _types(new)
    if old_types and (not new_types or not old_types <= new_types):
        problems.append(f"{here}: type narrowed or changed from {sorted(old_types)} to {sorted(new_types or {'any'})}")
    if "enum" in old:
        removed = [v for v in old["enum"] if v not in new.get("enum", old["enum"])]
        problems += [f"{here}: enum value {v!r} removed" for v in removed]
    elif "enum" in new:
        problems.append(f"{here}: an open value became an enum")
    for keyword in ("format", "pattern", "const"):
        if new.get(keyword) != old.get(keyword) and keyword in new:
            problems.append(f"{here}: {keyword} changed from {old.get(keyword)!r} to {new[keyword]!r}")
    if old.get("additionalProperties", True) is not False and new.get("additionalProperties") is False:
        problems.append(f"{here}: additional properties are no longer allowed")
    for key, old_sub, new_sub in _subschemas(old, new):
        problems += incompatibilities(old_sub, new_sub, f"{where}.{key}" if where else key)
    return problems


def _types(schema: Mapping[str, Any]) -> set[str]:
    declared = schema.get("type")
    if declared is None:
        return set()
    types = {declared} if isinstance(declared, str) else set(declared)
    return types | ({"number"} if "integer" in types and "number" in types else set())


def _subschemas(old: Mapping[str, Any], new: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any], Any]]:
    """Pairs of sub-schemas to compare: properties (a removed optional property is fine), items,
    additionalProperties and propertyNames."""
    for name, sub in old.get("properties", {}).items():
        if name in new.get("properties", {}):
            yield name, sub, new["properties"][name]
    for keyword in ("items", "additionalProperties", "propertyNames"):
        if isinstance(old.get(keyword), dict) and isinstance(new.get(keyword), dict):
            yield f"[{keyword}]", old[keyword], new[keyword]


__all__ = [
    "CONTENT_TYPE",
    "DEAD_LETTER",
    "IMAGE_CLASSIFICATION",
    "IMAGE_REMOVAL",
    "LISTING_UPDATE",
    "RELEASED_DIR",
    "SCHEMAS",
    "Headers",
    "Schema",
    "correlation_id",
    "incompatibilities",
    "load",
    "record_id",
]
