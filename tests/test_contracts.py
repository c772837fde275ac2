"""The output contracts (processor/contracts.py, processor/schemas/): records of every kind, built by the
real pipeline, sink and listing actor, validate against the shipped schemas; the enums cover what the
code produces; ids change exactly when what a subscriber sees changes; a schema change is compatible
with the last release; topic configurations agree across the code, compose and Kubernetes."""

from __future__ import annotations

import asyncio
import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
import yaml

from processor import contracts, errors, metrics
from processor.dev.imageserver import ImageServer
from processor.dev.memory import MemoryCache, MemoryPublisher, MemoryStore
from processor.events import Deletion, Envelope, ImageEvent
from processor.listings import HeroReason, HeroRule, ImageResult, ListingRules, compute_state
from processor.listings.actor import listing_record
from processor.model import UNSURE
from processor.pipeline import Pipeline
from processor.settings import DEFAULT_MODEL_DIR, Settings
from processor.sink import Record, Sink, SinkTopics
from processor.topics import ConsumerRecord, describe_topics, ensure_topics, topic_configs

from .conftest import event
from .contract import check_record, dead_letter_kinds
from .test_pipeline import PoisonedClassifier, white_jpeg
from .test_poison import RejectingPublisher, classification

ROOT = Path(__file__).parents[1]
TOPIC_SCHEMAS = {
    "out": contracts.IMAGE_CLASSIFICATION,
    "dlq": contracts.DEAD_LETTER,
    "removals": contracts.IMAGE_REMOVAL,
}


def as_read(records: list[Record], schemas: dict[str, contracts.Schema]) -> list[tuple[contracts.Schema, Any]]:
    """Records as a subscriber reads them, checked; (schema, value) each."""
    checked = []
    for offset, r in enumerate(records):
        schema = schemas[r.topic]
        checked.append((schema, check_record(schema, ConsumerRecord(0, offset, r.key, r.value, r.headers))))
    return checked


def test_every_schema_is_valid_2020_12_and_names_its_version() -> None:
    for schema in contracts.SCHEMAS:
        doc = contracts.load(schema)
        jsonschema.Draft202012Validator.check_schema(doc)
        assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert doc["$id"] == schema.id and doc["$id"].endswith(f"/{schema.version}.schema.json")
        assert doc["additionalProperties"] is True, "a closed record would refuse the next minor version"
        assert "schema_version" in doc["required"]
        jsonschema.validate(schema.version, doc["properties"]["schema_version"])
    assert {p.name for p in contracts.SCHEMA_DIR.glob("*.schema.json")} == {s.path.name for s in contracts.SCHEMAS}, (
        "a schema file no contract names (or the other way round)"
    )


def test_the_enums_cover_every_value_the_code_produces() -> None:
    classification_doc = contracts.load(contracts.IMAGE_CLASSIFICATION)
    positions = set(classification_doc["properties"]["position"]["enum"])
    for metadata in sorted((DEFAULT_MODEL_DIR.parent).glob("*/metadata.json")):
        labels = set(json.loads(metadata.read_text())["labels"]["position"])
        assert labels | {UNSURE} <= positions, f"{metadata.parent.name}: positions the schema does not list"
        assert labels <= set(classification_doc["properties"]["position_scores"]["propertyNames"]["enum"])
    kinds = {cls.kind for cls in _subclasses(errors.ProcessorError)}
    dead_doc = contracts.load(contracts.DEAD_LETTER)
    assert kinds == set(dead_doc["properties"]["error"]["properties"]["kind"]["enum"])
    hero = contracts.load(contracts.LISTING_UPDATE)["properties"]["hero"]["properties"]
    assert {str(r) for r in HeroReason} <= set(hero["reason"]["enum"])
    assert {str(r) for r in HeroRule} == set(hero["rule"]["enum"])
    assert positions <= set(hero["position"]["enum"])


def _subclasses(cls: type[errors.ProcessorError]) -> list[type[errors.ProcessorError]]:
    return [cls, *(s for sub in cls.__subclasses__() for s in _subclasses(sub))]


async def test_records_of_every_kind_built_by_the_pipeline_validate(
    settings: Settings, image_server: ImageServer, jpegs: dict[str, bytes]
) -> None:
    """Through the real pipeline and sink: a classification, a removal, and a dead letter of every kind."""
    settings = settings.with_overrides(batch_delay_ms=50, max_image_bytes=4 * 1024 * 1024)
    image_server.images["white.jpg"] = white_jpeg()
    publisher, store = MemoryPublisher(), MemoryStore()
    pipeline = Pipeline(settings, PoisonedClassifier(settings.model_dir), store, MemoryCache(), publisher)
    tag = settings.consumer_group
    inputs: list[bytes] = [
        orjson.dumps(event("c-ok", image_server.url(sorted(jpegs)[0]) + f"?v={tag}")),
        orjson.dumps(event("c-white", image_server.url("white.jpg") + f"?v={tag}")),
        orjson.dumps(event("c-404", image_server.url("no-such.jpg"))),
        orjson.dumps(event("c-html", image_server.base_url + "/html")),
        orjson.dumps(event("c-huge", image_server.base_url + "/huge")),
        orjson.dumps(event("c-blocked", "http://10.1.2.3/x.jpg")),
        orjson.dumps({"image_id": "c-del", "listing_id": "listing-1", "deleted": True}),
        b'{"image_id": "c-bad", "listing_id": 7}',
        b"\xff\xfe not json",
        b"null",
    ]
    traced = ((contracts.CORRELATION_HEADER, b"trace-42"),)
    envelopes = [
        Envelope(raw, "images", 0, i, 1_700_000_000_000, traced if i == 0 else ()) for i, raw in enumerate(inputs)
    ]
    await pipeline.start()
    try:
        await asyncio.gather(*(pipeline.process(e) for e in envelopes))
        await pipeline.fail(Envelope(b'{"image_id": "c-bug"}', "images", 0, 99), RuntimeError("a bug"))
    finally:
        await pipeline.stop()
    rejecting = RejectingPublisher()
    sink = Sink(MemoryStore(), rejecting, MemoryCache(), SinkTopics("out", "dlq", "removals"), 4, 0.01, 1)
    sink.start()
    try:
        await sink.submit(classification("too-big", "1", datetime.now(UTC)))
    finally:
        await sink.stop()

    topics = SinkTopics(settings.output_topic, settings.dlq_topic, settings.removals_topic)
    schemas = {
        getattr(topics, k): s
        for k, s in (
            ("output", contracts.IMAGE_CLASSIFICATION),
            ("dlq", contracts.DEAD_LETTER),
            ("removals", contracts.IMAGE_REMOVAL),
        )
    }
    checked = as_read(publisher.records, schemas) + as_read(rejecting.records, TOPIC_SCHEMAS)
    dead = [r for r in [*publisher.records, *rejecting.records] if r.topic in ("dlq", settings.dlq_topic)]
    kinds = dead_letter_kinds([ConsumerRecord(0, 0, r.key, r.value, r.headers) for r in dead])
    assert set(kinds) == {cls.kind for cls in _subclasses(errors.ProcessorError)}, kinds
    values = {v.get("image_id") or v.get("event_raw", {}).get("base64"): v for _, v in checked if v}
    assert (
        values["c-ok"]["position"] in contracts.load(contracts.IMAGE_CLASSIFICATION)["properties"]["position"]["enum"]
    )
    assert values["c-del"]["deleted"] is True
    unparsable = [v for _, v in checked if v and v.get("event") is None and "event_raw" in v]
    assert len(unparsable) == 2, "not JSON and JSON null both carry their raw bytes"
    headers = {orjson.loads(r.value or b"{}").get("image_id"): dict(r.headers) for r in publisher.records}
    assert headers["c-ok"][contracts.CORRELATION_HEADER] == b"trace-42", "the input's correlation id is not passed on"
    assert headers["c-404"][contracts.CORRELATION_HEADER] != headers["c-html"][contracts.CORRELATION_HEADER]
    no_key = [r for r in publisher.records if r.key is None]
    assert len(no_key) == 4 and {orjson.loads(r.value or b"{}")["listing_id"] for r in no_key} == {None}, (
        "a record with a listing id lost its key"
    )


def test_listing_records_validate_and_a_listing_without_images_is_a_tombstone() -> None:
    rules = ListingRules(hero_rule=HeroRule.PREFERRED_POSITION)
    images = [
        ImageResult("a", 0, True, "front", "2026.11.30.9"),
        ImageResult("b", 1, False, UNSURE, "2026.11.30.10"),
        ImageResult("c", None, False, "rear_three_quarter", "2026.11.30.10"),
    ]
    cases = [images, images[:1], images[1:2], []]
    schemas = {"listing-updates": contracts.LISTING_UPDATE}
    for n, case in enumerate(cases, start=1):
        state = compute_state(f"L{n}", case, rules)
        state = type(state)(**{**{f: getattr(state, f) for f in state.__slots__}, "revision": n})
        record = listing_record("listing-updates", state, "corr" if n == 1 else None)
        [(_, value)] = as_read([record], schemas)
        assert record.key == f"L{n}".encode() and dict(record.headers)["revision"] == str(n).encode()
        assert (value is None) == (not case), "an empty listing is published as anything but a tombstone"
    assert dict(listing_record("t", compute_state("L", images, rules), "corr").headers)["correlation-id"] == b"corr"


def test_result_id_changes_with_what_a_subscriber_sees_and_classification_id_with_the_verdict() -> None:
    when = datetime(2026, 11, 30, 12, tzinfo=UTC)
    base = classification("img", "2026.11.30.9", when)
    base.event = base.event.model_copy(update={"position_index": 4})
    first = base.to_output()
    replay = copy.copy(base)
    replay.cache, replay.timings_ms = "url", {"total": 3.0}
    replay.classified_at, replay.envelope = when + timedelta(hours=1), Envelope(b"{}", "images", 3, 77)
    assert replay.to_output()["result_id"] == first["result_id"], "a replay looks like an update"
    moved = copy.copy(base)
    moved.event = base.event.model_copy(update={"position_index": 0})
    later = copy.copy(base)
    later.event_time = when + timedelta(minutes=1)
    rescored = copy.copy(base)
    rescored.banner_score = 0.7
    for changed in (moved, later, rescored):
        out = changed.to_output()
        assert out["result_id"] != first["result_id"], "a real update looks like a duplicate"
        assert out["event_id"] == out["result_id"]
    assert moved.to_output()["classification_id"] == first["classification_id"]
    assert base.output_id == first["result_id"], "Postgres stores another id than the topic's"
    event = ImageEvent(image_id="img", listing_id="l", deleted=True)
    removal = Deletion(event, Envelope(b"{}", "images", 0, 1), when).to_output()
    assert Deletion(event, Envelope(b"{}", "images", 5, 9), when).to_output()["result_id"] == removal["result_id"]
    assert (
        Deletion(event, Envelope(b"{}"), when + timedelta(seconds=1)).to_output()["result_id"] != removal["result_id"]
    )


@pytest.mark.parametrize(
    ("header", "derived"),
    [(b"abc-123", False), (b"", True), (b"x" * 200, True), (b"\xff\xfe", True), (b"line\nbreak", True)],
)
def test_an_input_correlation_id_is_kept_only_when_usable(header: bytes, derived: bool) -> None:
    envelope = Envelope(b"{}", "images", 2, 5, None, (("Correlation-ID", header),))
    plain = Envelope(b"{}", "images", 2, 5).correlation_id()
    assert (envelope.correlation_id() == plain) == derived
    assert plain == Envelope(b"{}", "images", 2, 5).correlation_id() != Envelope(b"{}", "images", 2, 6).correlation_id()


async def test_superseded_and_stale_outcomes_are_counted() -> None:
    def count(kind: str, reason: str) -> float:
        return metrics.UNPUBLISHED.labels(kind=kind, reason=reason)._value.get()  # type: ignore[attr-defined, no-any-return]

    before = {(k, r): count(k, r) for k in ("classification", "removal") for r in ("superseded", "stale")}
    publisher = MemoryPublisher()
    sink = Sink(MemoryStore(), publisher, MemoryCache(), SinkTopics("out", "dlq", "removals"), 8, 0.05)
    when = datetime.now(UTC)
    old, new = classification("s", "1", when - timedelta(minutes=1)), classification("s", "1", when)
    gone = Deletion(ImageEvent(image_id="s", listing_id="versions", deleted=True), Envelope(b"{}"), when)
    sink.start()
    try:
        await asyncio.gather(sink.submit(old), sink.submit(new))  # one flush: the older is superseded
        await sink.submit(gone)  # a removal at the same time wins over the result
        await sink.submit(classification("s", "1", when - timedelta(seconds=1)))  # stale: the row is newer
    finally:
        await sink.stop()
    assert count("classification", "superseded") - before["classification", "superseded"] == 1
    assert count("classification", "stale") - before["classification", "stale"] == 1
    assert [r.topic for r in publisher.records] == ["out", "removals"]


def test_schemas_are_backward_compatible_with_the_last_release() -> None:
    """The CI check: every schema against its released copy (processor/schemas/released/), and a schema
    that changed has a new version, with a line in CHANGELOG.md."""
    changelog = " ".join((ROOT / "CHANGELOG.md").read_text().replace("*", "").split())
    for schema in contracts.SCHEMAS:
        released = contracts.RELEASED_DIR / schema.path.name
        assert released.exists(), f"{schema.name} was never released: copy it to {contracts.RELEASED_DIR}"
        old, new = json.loads(released.read_text()), contracts.load(schema)
        assert contracts.incompatibilities(old, new) == [], f"{schema.name}: not compatible with the last release"
        if old != new:
            assert old["$id"] != new["$id"], f"{schema.name} changed: give it a new version"
        assert f"{schema.name} {schema.version}" in changelog, (
            f"CHANGELOG.md does not name {schema.name} {schema.version}"
        )


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda d: d["required"].remove("listing_id"), "required field 'listing_id' removed"),
        (lambda d: d["required"].append("new_field"), "required field 'new_field' added"),
        (lambda d: d["properties"]["position"]["enum"].remove("trunk"), "enum value 'trunk' removed"),
        (lambda d: d["properties"]["position_index"].update(type="integer"), "position_index: type narrowed"),
        (lambda d: d["properties"]["banner_score"].update(type="integer"), "banner_score: type narrowed"),
        (lambda d: d["properties"]["model"]["required"].append("stage"), "model: required field 'stage' added"),
        (lambda d: d["properties"]["url"].update(enum=["x"]), "url: an open value became an enum"),
        (lambda d: d.update(additionalProperties=False), "additional properties are no longer allowed"),
        (lambda d: d["properties"]["content_hash"].update(pattern="^md5:"), "content_hash: pattern changed"),
    ],
)
def test_the_compatibility_check_refuses_breaking_changes(change: Any, problem: str) -> None:
    old = contracts.load(contracts.IMAGE_CLASSIFICATION)
    new = copy.deepcopy(old)
    change(new)
    assert any(problem in p for p in contracts.incompatibilities(old, new)), contracts.incompatibilities(old, new)


def test_the_compatibility_check_allows_additive_changes() -> None:
    old = contracts.load(contracts.IMAGE_CLASSIFICATION)
    new = copy.deepcopy(old)
    new["properties"]["position"]["enum"].append("wheel")
    new["properties"]["hint"] = {"type": "string"}
    new["properties"]["position_index"]["type"] = ["integer", "null", "string"]
    del new["properties"]["timings_ms"]  # an optional property may go; its values stay valid
    assert contracts.incompatibilities(old, new) == []


def test_topic_configs_agree_across_the_code_compose_and_kubernetes() -> None:
    """listing-updates is compacted with tombstones kept as long as records elsewhere; every other topic
    is a stream with retention.ms. Compose and the Kubernetes config map feed the same settings to the
    same `processor topics create`, so they agree when their values give the same configs."""
    configmap = yaml.safe_load((ROOT / "deploy/k8s/base/configmap.yaml").read_text())["data"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    example = dict(
        line.split("=", 1)
        for line in (ROOT / "deploy/compose.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    compose_env = {k: _interpolate(str(v), example) for k, v in compose["x-processor-env"].items()}
    produced = []
    for env in (configmap, compose_env):
        fields = {k.removeprefix("PROCESSOR_").lower(): v for k, v in env.items() if k.startswith("PROCESSOR_")}
        chosen = {k: fields[k] for k in ("topic_retention_ms",) if k in fields}
        produced.append(topic_configs(Settings(**chosen)))
    assert produced[0] == produced[1], "compose and Kubernetes create topics with different configs"
    configs = produced[0]
    assert configs["listing-updates"] == {"cleanup.policy": "compact", "delete.retention.ms": "604800000"}
    streams = {t: c for t, c in configs.items() if t != "listing-updates"}
    assert set(streams) == {"images", "images-backfill", "image-classifications", "images-dlq", "image-removals"}
    assert all(c == {"cleanup.policy": "delete", "retention.ms": "604800000"} for c in streams.values())
    assert compose["services"]["topics"]["command"] == ["topics", "create"]
    job = yaml.safe_load((ROOT / "deploy/k8s/base/job-topics.yaml").read_text())
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["topics", "create"]


def _interpolate(value: str, env: dict[str, str]) -> str:
    """${NAME:-default} and ${NAME:?message} as compose reads them with the example .env."""
    import re

    return re.sub(r"\$\{(\w+)(?::[-?]([^}]*))?\}", lambda m: env.get(m[1], m[2] or ""), value)


async def test_the_broker_gets_the_topic_configs(settings: Settings) -> None:
    """What `processor topics create` asks for is what the broker holds. The embedded broker (Tansu)
    stores these configs but never compacts: compaction itself is Kafka's, not tested here."""
    configs = topic_configs(settings)
    created = await ensure_topics(
        settings.broker_url, settings.topics, 2, 1, settings.topic_retention_ms, configs=configs
    )
    assert sorted(created) == sorted(settings.topics)
    described = await describe_topics(settings.broker_url, settings.topics)
    for topic, wanted in configs.items():
        assert {k: described[topic].get(k) for k in wanted} == wanted, topic
    assert described[settings.listing_updates_topic]["cleanup.policy"] == "compact"
