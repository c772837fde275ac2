"""The labelling queue against Postgres: active-learning fill, hand-out, consensus, review, agreement, export."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

from processor.dev.imageserver import ImageServer
from processor.labelling import guidelines, sampling
from processor.labelling.consensus import Verdict
from processor.labelling.export import export, held_out
from processor.labelling.tasks import (
    Answer,
    Progress,
    QueueError,
    agreement,
    next_task,
    record_answer,
    redecide,
    resolve,
    review_queue,
)

from .labelling_support import (
    LabelDb,
    label_db_fixture,  # noqa: F401
)

THRESHOLD = 0.54


async def answer(db: LabelDb, user: int, verdict: Verdict = "label", banner: bool = False, position: str = "front"):  # type: ignore[no-untyped-def]
    task = await next_task(db.pool, user, db.config)
    assert task is not None
    version = (await guidelines.current(db.pool)).version
    label = verdict == "label"
    await record_answer(
        db.pool,
        user,
        Answer(task.image_id, verdict, banner if label else None, position if label else None, version),
        db.config,
    )
    return task.image_id


async def status(db: LabelDb, image_id: str) -> str:
    return str(await db.pool.fetchval("SELECT status FROM label_tasks WHERE image_id = $1", image_id))


async def test_the_queue_takes_uncertain_images_first_and_a_random_share(label_db: LabelDb) -> None:
    db = label_db
    await db.classify("sure", "http://x/1", banner_score=0.99, position="front")
    await db.classify("banner-doubt", "http://x/2", banner_score=0.55, position="front")
    await db.classify("position-doubt", "http://x/3", banner_score=0.02, position=None)
    for i in range(20):
        await db.classify(f"other-{i:02d}", f"http://x/o{i}", banner_score=0.98 - i * 0.001, position="side")
    filled = await sampling.fill(db.pool, db.settings.postgres_table, 4, 0.25, THRESHOLD)
    assert (filled.random, filled.uncertain) == (1, 3)
    rows = {r["image_id"]: r for r in await db.pool.fetch("SELECT * FROM label_tasks")}
    by_chance = {image_id for image_id, r in rows.items() if r["reason"] == "random"}
    assert len(by_chance) == 1  # drawn first, from all 23: it may be one of the doubtful ones
    for image_id, reason in (("banner-doubt", "banner"), ("position-doubt", "position")):
        assert image_id in by_chance or rows[image_id]["reason"] == reason
    again = await sampling.fill(db.pool, db.settings.postgres_table, 100, 0.0, THRESHOLD)
    assert again.uncertain == 23 - 4  # every image is queued once


async def test_deleted_rows_are_never_queued(label_db: LabelDb) -> None:
    db = label_db
    await db.classify("kept", "http://x/1", banner_score=0.5)
    await db.classify("gone", "http://x/2", banner_score=0.5)
    await db.pool.execute(f'ALTER TABLE "{db.settings.postgres_table}" ADD COLUMN IF NOT EXISTS deleted boolean')
    await db.pool.execute(f"UPDATE \"{db.settings.postgres_table}\" SET deleted = true WHERE image_id = 'gone'")
    filled = await sampling.fill(db.pool, db.settings.postgres_table, 10, 0.5, THRESHOLD)
    assert filled.random + filled.uncertain == 1
    assert await db.pool.fetchval("SELECT image_id FROM label_tasks") == "kept"


async def test_three_agreeing_labellers_make_a_label_final_and_nobody_sees_an_image_twice(label_db: LabelDb) -> None:
    db = label_db
    await db.classify("img", "http://x/1", banner_score=0.5)
    await sampling.fill(db.pool, db.settings.postgres_table, 10, 0.0, THRESHOLD)
    users = [await db.user(f"l{i}") for i in range(3)]
    await answer(db, users[0], banner=True, position="rear")
    assert await next_task(db.pool, users[0], db.config) is None  # answered: never again for this person
    await answer(db, users[1], banner=True, position="rear")
    assert await status(db, "img") == "open"
    await answer(db, users[2], banner=True, position="rear")
    row = await db.pool.fetchrow("SELECT status, banner, position FROM label_tasks")
    assert tuple(row) == ("final", True, "rear")
    stamped = await db.pool.fetch("SELECT DISTINCT guidelines_version FROM label_answers")
    assert [r[0] for r in stamped] == [(await guidelines.current(db.pool)).version]


async def test_an_image_is_shown_to_at_most_n_at_once(label_db: LabelDb) -> None:
    db = label_db
    await db.classify("img", "http://x/1", banner_score=0.5)
    await sampling.fill(db.pool, db.settings.postgres_table, 10, 0.0, THRESHOLD)
    users = [await db.user(f"l{i}") for i in range(6)]
    shown = [await next_task(db.pool, u, db.config) for u in users]
    assert [t is not None for t in shown] == [True] * 5 + [False]
    assert await next_task(db.pool, users[0], db.config) == shown[0]  # a reload shows the same image


async def test_disagreement_goes_to_review_where_the_admin_decides(label_db: LabelDb) -> None:
    db = label_db
    await db.classify("img", "http://x/1", banner_score=0.5)
    await sampling.fill(db.pool, db.settings.postgres_table, 10, 0.0, THRESHOLD)
    users = [await db.user(f"l{i}") for i in range(4)]
    admin = await db.user("boss", "admin")
    for user, position in zip(users, ("front", "side", "rear"), strict=False):
        await answer(db, user, position=position)
    await answer(db, users[3], verdict="unsure")  # 1 + 1 slot cannot reach 3
    assert await status(db, "img") == "review"
    queue = await review_queue(db.pool)
    assert [r["image_id"] for r in queue] == ["img"] and '"unsure"' in queue[0]["tally"]
    await resolve(db.pool, admin, "img", (False, "side"))
    assert await status(db, "img") == "resolved"
    try:
        await resolve(db.pool, admin, "img", None)
    except QueueError:
        pass
    else:
        raise AssertionError("resolved twice")
    by_user = {r["username"]: r for r in await agreement(db.pool)}
    assert (by_user["l1"]["agreed"], by_user["l1"]["decided"]) == (1, 1)
    assert (by_user["l0"]["agreed"], by_user["l0"]["decided"]) == (0, 1)
    assert by_user["l3"]["unsure"] == 1


async def test_an_answer_needs_a_shown_image(label_db: LabelDb) -> None:
    db = label_db
    await db.classify("img", "http://x/1", banner_score=0.5)
    await sampling.fill(db.pool, db.settings.postgres_table, 10, 0.0, THRESHOLD)
    user = await db.user("l0")
    try:
        await record_answer(db.pool, user, Answer("img", "label", True, "front", 1), db.config)
    except QueueError:
        return
    raise AssertionError("an answer to an image that was never shown was stored")


async def test_export_writes_train_and_holdout_sets_that_train_reads(
    label_db: LabelDb, image_server: ImageServer, jpegs: dict[str, bytes], tmp_path: Path
) -> None:
    from processor.ml.dataset import read_labels

    db = label_db
    names = sorted(jpegs)[:12]
    for i, name in enumerate(names):
        await db.classify(f"img-{i:02d}", image_server.url(name), banner_score=0.5)
    await db.classify("broken", image_server.base_url + "/html", banner_score=0.5)
    await db.classify("blocked", "http://10.0.0.1/x.jpg", banner_score=0.5)
    await sampling.fill(db.pool, db.settings.postgres_table, 100, 0.5, THRESHOLD)
    await db.pool.execute(
        "UPDATE label_tasks SET status = 'final', banner = image_id LIKE '%1', position = 'front' "
        "WHERE image_id <> 'img-11'"
    )
    await db.pool.execute("UPDATE label_tasks SET status = 'review' WHERE image_id = 'img-11'")
    summary = await export(db.pool, db.settings, tmp_path, 30)
    assert set(summary.failed) == {"broken", "blocked"}
    holdout = {f"img-{i:02d}" for i in range(11) if held_out(f"img-{i:02d}", 30)}
    assert (summary.train, summary.holdout) == (11 - len(holdout), len(holdout))
    train, test = read_labels(tmp_path / "train"), read_labels(tmp_path / "holdout")
    assert len(train) == summary.train and len(test) == summary.holdout
    assert all(item.path.exists() and item.position == "front" for item in train + test)
    with (tmp_path / "holdout" / "labels.csv").open() as fh:
        assert {r["image_id"] for r in csv.DictReader(fh)} == holdout
    randoms = read_labels(tmp_path / "holdout-random")
    assert all(r.path.exists() for r in randoms) and len(randoms) == summary.holdout_random


def test_label_commands_create_accounts_and_fill_the_queue(label_db: LabelDb) -> None:
    from click.testing import CliRunner

    from processor.cli import main
    from processor.dev.harness import settings_env

    env = {**settings_env(label_db.settings), "PROCESSOR_LABEL_DB_SCHEMA": label_db.config.db_schema}
    runner = CliRunner()
    added = runner.invoke(
        main, ["label", "add-user", "Boss", "--admin", "--password-stdin"], "a long password\n", env=env
    )
    assert added.exit_code == 0 and "created admin boss" in added.output
    weak = runner.invoke(main, ["label", "add-user", "lab", "--password-stdin"], "short\n", env=env)
    assert weak.exit_code != 0 and "at least 10 characters" in weak.output
    reset = runner.invoke(main, ["label", "set-password", "boss", "--password-stdin"], "another long one\n", env=env)
    assert reset.exit_code == 0 and "password of boss replaced" in reset.output
    filled = runner.invoke(main, ["label", "fill", "--count", "5", "--random-share", "0.4"], env=env)
    assert filled.exit_code == 0 and "queued 0 uncertain and 0 random images" in filled.output


async def test_a_team_smaller_than_n_sends_a_disputed_image_to_review(label_db: LabelDb) -> None:
    db = label_db  # K = 3, N = 5, and only three labellers
    await db.classify("img", "http://x/1", banner_score=0.5)
    await sampling.fill(db.pool, db.settings.postgres_table, 10, 0.0, THRESHOLD)
    users = [await db.user(f"l{i}") for i in range(3)]
    for user, position in zip(users, ("front", "front", "side"), strict=True):
        await answer(db, user, position=position)
    assert await status(db, "img") == "review"  # two of three agree; nobody is left to make it three


async def test_redecide_moves_images_nobody_can_finish_after_the_team_shrank(label_db: LabelDb) -> None:
    db = label_db
    await db.classify("img", "http://x/1", banner_score=0.5)
    await sampling.fill(db.pool, db.settings.postgres_table, 10, 0.0, THRESHOLD)
    users = [await db.user(f"l{i}") for i in range(4)]
    for user, position in zip(users, ("front", "side"), strict=False):
        await answer(db, user, position=position)
    assert await status(db, "img") == "open"  # two people may still agree with one of them
    await db.pool.execute("UPDATE label_users SET active = false WHERE id = ANY($1::int[])", users[2:])
    assert await redecide(db.pool, db.config) == {"final": 0, "review": 1}
    assert await status(db, "img") == "review"


async def test_a_labeller_sees_how_far_they_are(label_db: LabelDb) -> None:
    from processor.labelling.tasks import progress

    db = label_db
    for i in range(3):
        await db.classify(f"img-{i}", f"http://x/{i}", banner_score=0.5)
    await sampling.fill(db.pool, db.settings.postgres_table, 10, 0.0, THRESHOLD)
    user = await db.user("l0")
    assert await progress(db.pool, user, db.config) == Progress(0, 0, 3)
    await answer(db, user)
    assert await progress(db.pool, user, db.config) == Progress(1, 1, 2)


async def test_undo_takes_back_ones_last_answers_until_the_image_is_decided(label_db: LabelDb) -> None:
    from processor.labelling.tasks import can_undo, undo_last

    db = label_db  # K = 3, N = 5
    for i in range(2):
        await db.classify(f"img-{i}", f"http://x/{i}", banner_score=0.5)
    await sampling.fill(db.pool, db.settings.postgres_table, 10, 0.0, THRESHOLD)
    users = [await db.user(f"l{i}") for i in range(4)]
    assert not await can_undo(db.pool, users[0]) and await undo_last(db.pool, users[0]) is None
    first = await answer(db, users[0], position="side")  # a wrong key
    second = await answer(db, users[0], verdict="skip")
    assert await undo_last(db.pool, users[0]) == second  # the latest first
    assert await undo_last(db.pool, users[0]) == first  # then the one before
    votes = await db.pool.fetchrow("SELECT votes, skips FROM label_tasks WHERE image_id = $1", first)
    assert (votes["votes"], votes["skips"]) == (0, 0)
    task = await next_task(db.pool, users[0], db.config)
    assert task is not None and task.image_id == first  # the image undone last comes back at once
    await answer(db, users[0], position="front")
    assert await answer(db, users[0], verdict="skip") == second
    for user in users[1:3]:
        assert {await answer(db, user, position="front") for _ in range(2)} == {first, second}
    assert await status(db, first) == "final"  # three fronts: the undone "side" did not count
    rows = await db.pool.fetch("SELECT position FROM label_answers WHERE image_id = $1 AND verdict = 'label'", first)
    assert sorted(r["position"] for r in rows) == ["front"] * 3
    assert await undo_last(db.pool, users[0]) == second  # the final image's answer is out of reach; the skip is not
    assert await undo_last(db.pool, users[0]) is None and not await can_undo(db.pool, users[0])


async def test_undo_brings_an_image_back_from_review(label_db: LabelDb) -> None:
    from processor.labelling.tasks import undo_last

    db = label_db
    db.config = db.config.with_overrides(agree=2, max_labellers=2)
    await db.classify("img", "http://x/1", banner_score=0.5)
    await sampling.fill(db.pool, db.settings.postgres_table, 10, 0.0, THRESHOLD)
    a, b = await db.user("a"), await db.user("b")
    await answer(db, a, position="front")
    await answer(db, b, position="side")  # a slip: two different labels of two, so to review
    assert await status(db, "img") == "review"
    assert await undo_last(db.pool, b) == "img"
    assert await status(db, "img") == "open"
    await answer(db, b, position="front")
    assert await status(db, "img") == "final"


async def test_the_suggestion_is_hidden_on_the_random_sample_and_a_share_of_draws(label_db: LabelDb) -> None:
    from processor.labelling.agreement import suggestion_split

    db = label_db
    for i in range(3):
        await db.classify(f"img-{i}", f"http://x/{i}", banner_score=0.5, position="side")
    await sampling.fill(db.pool, db.settings.postgres_table, 10, 0.0, THRESHOLD)
    await db.pool.execute("UPDATE label_tasks SET reason = 'random' WHERE image_id = 'img-2'")
    always, never = await db.user("always"), await db.user("never")
    for i in range(3):  # enough of a team that the images stay open
        await db.user(f"idle-{i}")
    version = (await guidelines.current(db.pool)).version
    for user, share, position in ((always, 0.0, "side"), (never, 1.0, "front")):
        config = db.config.with_overrides(suggestion_hidden_share=share)
        for _ in range(3):
            task = await next_task(db.pool, user, config, THRESHOLD)
            assert task is not None
            shown = share == 0.0 and task.image_id != "img-2"  # the random sample never shows it
            assert task.suggestion == ((False, "side") if shown else None)
            assert await next_task(db.pool, user, config, THRESHOLD) == task  # a reload: the same draw
            await record_answer(db.pool, user, Answer(task.image_id, "label", False, position, version), config)
    drawn = await db.pool.fetch("SELECT user_id, image_id, suggestion_shown FROM label_answers ORDER BY 1, 2")
    assert [r["suggestion_shown"] for r in drawn] == [True, True, False, False, False, False]
    split = {s.draw: (s.answers, s.with_model) for s in await suggestion_split(db.pool)}
    assert split == {"shown": (2, 2), "hidden": (2, 0), "random": (2, 1)}
    from .test_labelling_registry import run_cli

    code, out = await asyncio.to_thread(run_cli, db, "label", "agreement")  # the command runs its own loop
    assert code == 0 and "shown" in out and "100.0% (2 of 2)" in out and "hidden on a draw" in out, out


async def test_search_is_literal_and_bulk_discard_and_review_count_what_changed(label_db: LabelDb) -> None:
    from processor.labelling.search import ImageQuery, discard_many, find_images, review_many
    from processor.labelling.tasks import review_queue

    for image_id in ("a%b", "axb", "other"):
        await label_db.classify(image_id, f"http://127.0.0.1:9/{image_id}.jpg", banner_score=0.5, listing_id="L_1")
    await sampling.fill(label_db.pool, label_db.settings.postgres_table, 10, 0.0, 0.54)
    admin = await label_db.user("boss", "admin")
    found = await find_images(label_db.pool, ImageQuery(text="A%"))
    assert [i["image_id"] for i in found.images] == ["a%b"] and found.total == 1  # % is no wildcard
    assert (await find_images(label_db.pool, ImageQuery(text="l_1"))).total == 3  # listing ids too
    assert (await find_images(label_db.pool, ImageQuery(text="axb", limit=1))).images[0]["image_id"] == "axb"
    assert await discard_many(label_db.pool, admin, ["a%b", "axb", "missing"]) == 2
    assert await discard_many(label_db.pool, admin, ["a%b"]) == 0  # discarded already
    assert (await find_images(label_db.pool, ImageQuery(state="discarded"))).total == 2
    # back to review (a rule changed): only decided images move; open ones stay where they are
    assert await review_many(label_db.pool, ["a%b", "other", "missing"]) == 1
    assert (await find_images(label_db.pool, ImageQuery(state="review"))).total == 1
    assert [r["image_id"] for r in await review_queue(label_db.pool)] == ["a%b"]
    assert await review_many(label_db.pool, ["a%b"]) == 0  # in review already
