"""A subscriber's check of the output contracts: every record of every output topic validates against
its shipped schema (a JSON Schema 2020-12 validator with formats checked), carries the contract's
headers and the documented key. The end-to-end tests call ``check_topics`` on what they produced."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

import jsonschema
import orjson

from processor import contracts
from processor.settings import Settings
from processor.topics import ConsumerRecord, read_records

FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    """RFC 3339 with an offset (jsonschema checks date-time only with an extra package installed)."""
    return not isinstance(value, str) or datetime.fromisoformat(value).tzinfo is not None


def validator(schema: contracts.Schema) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(contracts.load(schema), format_checker=FORMATS)


def check_value(schema: contracts.Schema, value: dict[str, Any]) -> None:
    """The record validates, and names the schema's version."""
    validator(schema).validate(value)
    assert value["schema_version"] == schema.version


def check_headers(schema: contracts.Schema, headers: dict[str, str]) -> None:
    assert headers["content-type"] == "application/json"
    assert headers["schema-id"] == schema.id == contracts.load(schema)["$id"]
    assert headers["schema-version"] == schema.version
    assert 0 < len(headers["correlation-id"]) <= contracts.MAX_CORRELATION_ID


def check_record(schema: contracts.Schema, record: ConsumerRecord) -> dict[str, Any] | None:
    """One record as a subscriber reads it: headers, key, value (None for a tombstone)."""
    headers = dict((k, v.decode()) for k, v in record.headers)
    assert len(headers) == len(record.headers), f"repeated headers: {record.headers}"
    check_headers(schema, headers)
    if record.value is None:
        assert schema is contracts.LISTING_UPDATE, "a tombstone outside the compacted topic"
        assert record.key and int(headers["revision"]) >= 1
        return None
    value: dict[str, Any] = orjson.loads(record.value)
    check_value(schema, value)
    if schema is contracts.LISTING_UPDATE:
        assert headers["revision"] == str(value["revision"])
    if schema is contracts.DEAD_LETTER and value["listing_id"] is None:
        assert record.key is None
    else:
        assert record.key == value["listing_id"].encode()
    return value


async def check_topics(settings: Settings, timeout_s: float = 3.0) -> dict[str, list[ConsumerRecord]]:
    """Read every output topic from the beginning and check every record; return them by topic."""
    topics = {
        settings.output_topic: contracts.IMAGE_CLASSIFICATION,
        settings.removals_topic: contracts.IMAGE_REMOVAL,
        settings.dlq_topic: contracts.DEAD_LETTER,
        settings.listing_updates_topic: contracts.LISTING_UPDATE,
    }
    found = {}
    for topic, schema in topics.items():
        records = await read_records(settings.broker_url, topic, timeout_s=timeout_s)
        for record in records:
            check_record(schema, record)
        found[topic] = records
    return found


def dead_letter_kinds(records: list[ConsumerRecord]) -> Counter[str]:
    return Counter(orjson.loads(r.value or b"{}")["error"]["kind"] for r in records)
