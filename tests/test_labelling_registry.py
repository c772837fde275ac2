"""The model registry (promote, active, rollback), its commands, and re-queuing images for a new model."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from processor import registry
from processor.cli import main
from processor.dev.harness import settings_env
from processor.migrations import apply as apply_migrations
from processor.reclassify import Selection, reclassify, where_clause
from processor.settings import DEFAULT_MODEL_DIR
from processor.topics import ensure_topics, read_topic

from .helpers import SHIPPED_MODEL_NAME
from .labelling_support import LabelDb, label_db_fixture  # noqa: F401


def model_copy(tmp_path: Path, version: str, **changes: object) -> Path:
    """A copy of the shipped model directory with another version (and metadata changes)."""
    target = tmp_path / version
    shutil.copytree(DEFAULT_MODEL_DIR, target, ignore=shutil.ignore_patterns("evaluation.json"))
    meta = json.loads((target / "metadata.json").read_text())
    meta.update(version=version, **changes)
    (target / "metadata.json").write_text(json.dumps(meta))
    return target


async def test_one_model_is_active_and_rollback_is_a_promotion(label_db: LabelDb, tmp_path: Path) -> None:
    pool = label_db.pool
    await registry.migrate(pool)
    assert await registry.migrate(pool) == 2  # idempotent
    assert await registry.active(pool) is None
    old, new = model_copy(tmp_path, "2026.12.1.1"), model_copy(tmp_path, "2026.12.2.1")
    await registry.promote(pool, old, None, "ana")
    promoted = await registry.promote(pool, new, {"banner": {"accuracy": 0.97}}, "bo")
    active = await registry.active(pool)
    assert active == promoted and active.version == "2026.12.2.1" and active.model_dir == new.resolve()
    assert active.evaluation == {"banner": {"accuracy": 0.97}} and active.promoted_by == "bo"
    back = await registry.promote(pool, old, None, "ana")  # rollback
    assert (await registry.active(pool)) == back and back.version == "2026.12.1.1"
    history = await registry.history(pool)
    assert [v.version for v in history] == ["2026.12.1.1", "2026.12.2.1"]
    assert [v.active for v in history] == [True, False]
    assert [v.generation for v in history] == [3, 2]  # promotion order: the rollback is the latest
    assert await pool.fetchval("SELECT count(*) FROM model_versions WHERE active") == 1


async def test_models_promoted_before_the_generation_column_are_numbered_by_promotion_time(
    label_db: LabelDb, tmp_path: Path
) -> None:
    pool = label_db.pool
    await apply_migrations(pool, registry.TABLE, registry.MIGRATIONS[:1])  # a registry of the previous release
    for version, day in (("2026.12.2.1", 2), ("2026.12.1.1", 3)):  # the second is a rollback to an older version
        await pool.execute(
            "INSERT INTO model_versions (name, version, model_dir, promoted_at, promoted_by, active) "
            "VALUES ('m', $1, '/x', $2, 'ana', $3)",
            version,
            datetime(2026, 12, day, tzinfo=UTC),
            day == 3,
        )
    await registry.migrate(pool)
    assert [(v.version, v.generation) for v in await registry.history(pool)] == [("2026.12.1.1", 2), ("2026.12.2.1", 1)]
    promoted = await registry.promote(pool, model_copy(tmp_path, "2026.12.4.1"), None, "bo")
    assert promoted.generation == 3


def run_cli(label_db: LabelDb, *args: str) -> tuple[int, str]:
    env = settings_env(label_db.settings)
    dsn = label_db.settings.postgres_dsn  # asyncpg passes unknown DSN parameters on as server settings
    search_path = f"search_path={label_db.config.db_schema},public"  # the test's own schema
    env["PROCESSOR_POSTGRES_DSN"] = f"{dsn}{'&' if '?' in dsn else '?'}{search_path}"
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.output


def test_promote_refuses_what_would_not_run(label_db: LabelDb, tmp_path: Path) -> None:
    good = model_copy(tmp_path, "2026.12.3.1")
    relabelled = model_copy(tmp_path, "2026.12.3.2", labels={"banner": ["no", "yes"], "position": ["front"]})
    broken = model_copy(tmp_path, "2026.12.3.3")
    (broken / "model.keras").write_bytes(b"not a model")
    code, out = run_cli(label_db, "model", "list")
    assert code == 0 and out.startswith("no model promoted yet")
    code, out = run_cli(label_db, "model", "promote", str(relabelled))
    assert code != 0 and "labels" in out
    code, out = run_cli(label_db, "model", "promote", str(broken))
    assert code != 0 and "does not load" in out
    broken_onnx = model_copy(tmp_path, "2026.12.3.4")
    (broken_onnx / "model.onnx").write_bytes(b"not a model either")
    code, out = run_cli(label_db, "model", "promote", str(broken_onnx))
    assert code != 0 and "does not load (onnx)" in out
    code, out = run_cli(label_db, "model", "promote", str(good), "--by", "ci")
    assert code == 0 and "2026.12.3.1" in out
    code, out = run_cli(label_db, "model", "list")
    assert code == 0 and out.startswith(f"* {SHIPPED_MODEL_NAME} 2026.12.3.1  #1") and "by ci" in out


def test_a_rollback_names_the_withdrawn_versions_and_how_to_reclassify_their_rows(
    label_db: LabelDb, tmp_path: Path
) -> None:
    old, bad = model_copy(tmp_path, "2026.12.6.1"), model_copy(tmp_path, "2026.12.6.2")
    assert run_cli(label_db, "model", "promote", str(old))[0] == 0
    code, out = run_cli(label_db, "model", "promote", str(bad))
    assert code == 0 and "promotion 2" in out and "rolled back" not in out
    code, out = run_cli(label_db, "model", "promote", str(old))
    assert code == 0 and "2026.12.6.1" in out and "promotion 3" in out
    assert "rolled back over 2026.12.6.2" in out and "processor reclassify --model-version 2026.12.6.2" in out
    code, out = run_cli(label_db, "model", "list")
    assert out.splitlines()[0].startswith(f"* {SHIPPED_MODEL_NAME} 2026.12.6.1  #3")


def test_promote_refuses_a_second_directory_under_a_version_and_a_borrowed_evaluation(
    label_db: LabelDb, tmp_path: Path
) -> None:
    first = model_copy(tmp_path / "a", "2026.12.5.1")
    again = model_copy(tmp_path / "b", "2026.12.5.1")  # other weights could hide under the same version
    assert run_cli(label_db, "model", "promote", str(first))[0] == 0
    code, out = run_cli(label_db, "model", "promote", str(again))
    assert code != 0 and "is registered from" in out
    code, out = run_cli(label_db, "model", "promote", str(again), "--replace")
    assert code == 0 and str(again.resolve()) in out
    child = model_copy(tmp_path, "2026.12.5.2")
    shutil.copy(DEFAULT_MODEL_DIR / "evaluation.json", child)  # the parent's figures, copied along
    code, out = run_cli(label_db, "model", "promote", str(child))
    assert code != 0 and "not this model's 2026.12.5.2" in out


def test_selections_become_sql_conditions() -> None:
    since = datetime(2026, 11, 1, tzinfo=UTC)
    where, args = where_clause(Selection(listings=("L1",), since=since, model_version_below="2026.11.30.5"), True)
    assert "listing_id = ANY($1::text[])" in where and "classified_at >= $2" in where
    assert "processor_version_key(model_version) < processor_version_key($3)" in where
    assert "deleted IS NOT TRUE" in where and args == [["L1"], since, "2026.11.30.5"]
    where, args = where_clause(Selection(model_versions=("2026.12.6.2",)), False)
    assert "model_version = ANY($1::text[])" in where and args == [["2026.12.6.2"]]
    assert not Selection(model_versions=("2026.12.6.2",)).is_empty()
    assert Selection().is_empty() and not Selection(everything=True).is_empty()


async def test_reclassify_requeues_the_chosen_images_at_a_bounded_rate(label_db: LabelDb) -> None:
    db, s = label_db, label_db.settings
    await db.classify("a1", "http://x/a1", listing_id="A", model_version="2026.11.30.9")
    await db.classify("a2", "http://x/a2", listing_id="A", model_version="2026.11.30.10")
    await db.classify("b1", "http://x/b1", listing_id="B", model_version="2026.11.30.9")
    await db.classify("gone", "http://x/g", listing_id="A", model_version="2026.11.30.1")
    await db.pool.execute(f"UPDATE \"{s.postgres_table}\" SET deleted = true WHERE image_id = 'gone'")
    await ensure_topics(s.broker_url, [s.input_topic], 2)
    seen: list[tuple[int, int]] = []
    selection = Selection(listings=("A",), model_version_below="2026.11.30.10")
    sent = await reclassify(
        db.pool, s.postgres_table, s.broker_url, s.input_topic, selection, 50.0, lambda n, t: seen.append((n, t))
    )
    assert sent == 1 and seen == [(1, 1)]
    sent = await reclassify(db.pool, s.postgres_table, s.broker_url, s.input_topic, Selection(everything=True), 50.0)
    assert sent == 3
    events = await read_topic(s.broker_url, s.input_topic, expected=4)
    assert sorted(e["image_id"] for e in events) == ["a1", "a1", "a2", "b1"]
    assert events[0]["event_time"].startswith("2026-11-29T12:00:00")  # the row's own event time
    with pytest.raises(ValueError):
        await reclassify(db.pool, s.postgres_table, s.broker_url, s.input_topic, Selection(), 50.0)
