"""Listing state rules: hero choice, coverage, feed, ties, the record's schema."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor.listings import (
    UNSURE,
    HeroReason,
    HeroRule,
    ImageResult,
    ListingRules,
    ListingState,
    compute_state,
)
from processor.listings.actor import listing_output

SCHEMA = json.loads((Path(__file__).parents[1] / "processor/schemas/listing-update.schema.json").read_text())
LABELS = (
    *("dashboard", "detail", "engine", "front", "front_three_quarter", "interior", "other", "rear"),
    *("rear_three_quarter", "side", "trunk", UNSURE),
)
SEED = ListingRules()
PREFERRED = ListingRules(hero_rule=HeroRule.PREFERRED_POSITION)


def img(
    image_id: str, index: int | None, position: str = "front", banner: bool = False, version: str = "1.0"
) -> ImageResult:
    return ImageResult(image_id, index, banner, position, version)


def test_seed_rule_takes_the_first_banner_free_image_in_listing_order() -> None:
    images = [img("a", 2, "front"), img("b", 0, "rear", banner=True), img("c", 1, "interior")]
    state = compute_state("L", images, SEED)
    assert (state.hero_image_id, state.hero_position, state.hero_reason) == (
        "c",
        "interior",
        HeroReason.FIRST_BANNER_FREE,
    )
    assert state.feed == ("c", "a")
    assert (state.image_count, state.banner_free_count, state.bannered_count) == (3, 2, 1)
    assert state.banner_share == pytest.approx(1 / 3, abs=1e-6)


def test_ties_and_missing_indexes_are_ordered_nulls_last_then_by_image_id() -> None:
    images = [img("z", None), img("y", 1), img("x", 1), img("a", None), img("m", 0, banner=True)]
    state = compute_state("L", images, SEED)
    assert state.feed == ("x", "y", "a", "z")
    assert state.hero_image_id == "x"


def test_preferred_rule_ranks_positions_then_listing_order() -> None:
    images = [
        img("a", 0, "interior"),
        img("b", 1, "front"),
        img("c", 2, "front_three_quarter", banner=True),
        img("d", 3, "rear"),
        img("e", 4, "front"),
    ]
    state = compute_state("L", images, PREFERRED)
    assert (state.hero_image_id, state.hero_reason, state.hero_rule) == (
        "b",
        HeroReason.PREFERRED_POSITION,
        "preferred_position",
    )
    rules = ListingRules(hero_rule=HeroRule.PREFERRED_POSITION, preferred_positions=("rear", "front"))
    assert compute_state("L", images, rules).hero_image_id == "d"


def test_preferred_rule_falls_back_to_the_first_banner_free_image() -> None:
    images = [img("a", 1, UNSURE), img("b", 0, "front", banner=True), img("c", 2, "engine")]
    state = compute_state("L", images, PREFERRED)
    assert (state.hero_image_id, state.hero_reason) == ("a", HeroReason.FIRST_BANNER_FREE)


@pytest.mark.parametrize("rules", [SEED, PREFERRED])
def test_no_hero_without_banner_free_images(rules: ListingRules) -> None:
    state = compute_state("L", [img("a", 0, banner=True), img("b", 1, "rear", banner=True)], rules)
    assert (state.hero_image_id, state.hero_position, state.hero_reason) == (
        None,
        None,
        HeroReason.NO_BANNER_FREE_IMAGE,
    )
    assert state.feed == ()
    assert state.banner_share == 1.0
    empty = compute_state("L", [], rules)
    assert (empty.hero_image_id, empty.hero_reason, empty.image_count) == (None, HeroReason.NO_IMAGES, 0)
    assert (empty.banner_share, empty.coverage_score, empty.model_versions) == (0.0, 0.0, ())


def test_coverage_counts_three_quarter_views_and_bannered_images_but_not_unsure() -> None:
    images = [img("a", 0, "front_three_quarter", banner=True), img("b", 1, UNSURE), img("c", 2, "interior")]
    state = compute_state("L", images, SEED)
    assert state.required_positions == ("front", "side", "rear", "interior", "dashboard")
    assert state.covered_positions == ("front", "side", "interior")
    assert state.missing_positions == ("rear", "dashboard")
    assert state.coverage_score == 0.6
    full = [*images, img("d", 3, "rear_three_quarter"), img("e", 4, "dashboard")]
    assert compute_state("L", full, SEED).coverage_score == 1.0


def test_coverage_rules_are_configurable() -> None:
    rules = ListingRules(required_positions=("front", "engine"), covers={})
    state = compute_state("L", [img("a", 0, "front_three_quarter"), img("b", 1, "engine")], rules)
    assert (state.covered_positions, state.coverage_score) == (("engine",), 0.5)
    assert compute_state("L", [], ListingRules(required_positions=())).coverage_score == 1.0


def test_rules_reject_bad_configuration() -> None:
    with pytest.raises(ValueError):
        ListingRules(hero_rule="best")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ListingRules(required_positions=("front", "front"))
    with pytest.raises(ValueError):
        ListingRules(preferred_positions=("front", UNSURE))
    assert ListingRules(hero_rule="preferred_position").hero_rule is HeroRule.PREFERRED_POSITION  # type: ignore[arg-type]


def test_model_versions_are_ordered_as_integer_tuples() -> None:
    images = [
        img("a", 0, version="2026.11.30.10"),
        img("b", 1, version="2026.11.30.9"),
        img("c", 2, version="2026.11.30.9"),
    ]
    assert compute_state("L", images, SEED).model_versions == ("2026.11.30.9", "2026.11.30.10")
    assert compute_state("L", [img("a", 0, version="v2.10"), img("b", 1, version="v2.9")], SEED).model_versions == (
        "v2.9",
        "v2.10",
    )


def test_two_different_results_for_one_image_are_refused() -> None:
    assert compute_state("L", [img("a", 0), img("a", 0)], SEED).image_count == 1
    with pytest.raises(ValueError, match="two different results"):
        compute_state("L", [img("a", 0), img("a", 1)], SEED)


def test_record_matches_the_schema_and_round_trips() -> None:
    at = datetime(2026, 12, 1, 8, 30, tzinfo=UTC)
    for images in ([], [img("a", 0, banner=True)], [img("a", 0, "side"), img("b", None, UNSURE, version="2")]):
        for rules in (SEED, PREFERRED):
            state = replace(compute_state("L", images, rules, updated_at=at), revision=3)
            record = listing_output(state)  # the value the actor publishes
            jsonschema.validate(record, SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
            assert record["updated_at"] == "2026-12-01T08:30:00Z"
            back = ListingState.from_output(json.loads(json.dumps(record)))
            assert back == state and (back.updated_at, back.revision) == (at, 3)
            assert back.state_hash == record["state_hash"]


def test_hash_ignores_updated_at_only() -> None:
    images = [img("a", 0), img("b", 1, "rear")]
    first = compute_state("L", images, SEED, updated_at=datetime(2026, 1, 1, tzinfo=UTC))
    later = compute_state("L", list(reversed(images)), SEED)
    assert first == later and first.state_hash == later.state_hash
    assert compute_state("L", images[:1], SEED).state_hash != first.state_hash


def _image(image_id: str, fields: tuple[int | None, bool, str, str]) -> ImageResult:
    return ImageResult(image_id, *fields)


image_sets = st.dictionaries(
    st.sampled_from("abcdefgh"),
    st.tuples(
        st.none() | st.integers(0, 4),
        st.booleans(),
        st.sampled_from(LABELS),
        st.sampled_from(["2026.11.30.4", "2026.11.30.5", "2026.11.30.10"]),
    ),
).map(lambda d: [_image(k, v) for k, v in d.items()])


@given(image_sets, st.randoms())
def test_state_depends_on_the_set_of_results_not_their_order(images: list[ImageResult], rng: random.Random) -> None:
    shuffled = images + images
    rng.shuffle(shuffled)
    for rules in (SEED, PREFERRED):
        state = compute_state("L", images, rules)
        assert compute_state("L", shuffled, rules) == state
        assert set(state.feed) == {i.image_id for i in images if not i.has_banner}
        assert (state.hero_image_id is None) == (not state.feed)
        if rules is SEED and state.feed:
            assert state.hero_image_id == state.feed[0]
        assert 0.0 <= state.coverage_score <= 1.0 and 0.0 <= state.banner_share <= 1.0
