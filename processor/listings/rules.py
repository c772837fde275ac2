"""Listing state rules: hero image, coverage and banner-free feed, as pure functions.

A listing's state depends only on the set of its surviving image results, never on the
order in which they arrived, so recomputing it from rows is always safe.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import orjson

from ..events import version_key
from ..model import UNSURE as UNSURE  # a position the model would not commit to: covers nothing, never preferred


class HeroRule(StrEnum):
    """How the hero image is chosen among banner-free images."""

    FIRST_BANNER_FREE = "first_banner_free"  # the first one in listing order (the seed rule)
    PREFERRED_POSITION = "preferred_position"  # the best-ranked position, then listing order


class HeroReason(StrEnum):
    """Why a listing has the hero it has (or none)."""

    FIRST_BANNER_FREE = "first_banner_free"
    PREFERRED_POSITION = "preferred_position"
    NO_BANNER_FREE_IMAGE = "no_banner_free_image"
    NO_IMAGES = "no_images"


DEFAULT_PREFERRED = ("front_three_quarter", "front", "side", "rear_three_quarter", "rear")
DEFAULT_REQUIRED = ("front", "side", "rear", "interior", "dashboard")
# A three-quarter view shows two faces of the car; every other position covers only itself.
DEFAULT_COVERS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "front_three_quarter": ("front_three_quarter", "front", "side"),
        "rear_three_quarter": ("rear_three_quarter", "rear", "side"),
    }
)


@dataclass(frozen=True, slots=True)
class ListingRules:
    """The configurable parts of a listing's state."""

    hero_rule: HeroRule = HeroRule.FIRST_BANNER_FREE
    preferred_positions: tuple[str, ...] = DEFAULT_PREFERRED
    required_positions: tuple[str, ...] = DEFAULT_REQUIRED
    covers: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: DEFAULT_COVERS)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hero_rule", HeroRule(self.hero_rule))  # accepts the plain string
        for name in ("preferred_positions", "required_positions"):
            values = tuple(getattr(self, name))
            if len(set(values)) != len(values) or UNSURE in values:
                raise ValueError(f"{name} must be distinct positions other than {UNSURE!r}: {values}")
            object.__setattr__(self, name, values)

    def covered_by(self, position: str) -> tuple[str, ...]:
        """The positions one image at ``position`` counts for."""
        if position == UNSURE:
            return ()
        return self.covers.get(position, (position,))


@dataclass(frozen=True, slots=True)
class ImageResult:
    """The latest surviving classification of one image, as the state needs it."""

    image_id: str
    position_index: int | None
    has_banner: bool
    position: str
    model_version: str


@dataclass(frozen=True, slots=True)
class ListingState:
    """One listing's state; equality ignores ``updated_at`` and ``revision`` (the content is what counts)."""

    listing_id: str
    hero_rule: HeroRule
    hero_reason: HeroReason
    hero_image_id: str | None
    hero_position: str | None
    required_positions: tuple[str, ...]
    covered_positions: tuple[str, ...]
    coverage_score: float
    image_count: int
    banner_free_count: int
    banner_share: float
    feed: tuple[str, ...]  # banner-free image ids in listing order
    model_versions: tuple[str, ...]  # ascending by events.version_key (as the image store compares them)
    updated_at: datetime = field(compare=False)
    revision: int = field(default=0, compare=False)  # the store's change counter; 0 before storing

    @property
    def bannered_count(self) -> int:
        return self.image_count - self.banner_free_count

    @property
    def missing_positions(self) -> tuple[str, ...]:
        return tuple(p for p in self.required_positions if p not in self.covered_positions)

    def content(self) -> dict[str, Any]:
        """The record without ``revision``, ``updated_at`` and ``state_hash``: what the hash covers."""
        return {
            "listing_id": self.listing_id,
            "hero": {
                "image_id": self.hero_image_id,
                "position": self.hero_position,
                "rule": str(self.hero_rule),
                "reason": str(self.hero_reason),
            },
            "coverage": {
                "score": self.coverage_score,
                "required": list(self.required_positions),
                "covered": list(self.covered_positions),
                "missing": list(self.missing_positions),
            },
            "counts": {
                "images": self.image_count,
                "banner_free": self.banner_free_count,
                "bannered": self.bannered_count,
            },
            "banner_share": self.banner_share,
            "feed": list(self.feed),
            "model_versions": list(self.model_versions),
        }

    @property
    def state_hash(self) -> str:
        """sha256 of the canonical JSON of ``content()``: equal states hash equal."""
        digest = hashlib.sha256(orjson.dumps(self.content(), option=orjson.OPT_SORT_KEYS)).hexdigest()
        return f"sha256:{digest}"

    def to_output(self) -> dict[str, Any]:
        """The ``listing-updates`` record (schemas/listing-update.schema.json)."""
        updated = self.updated_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
        return {**self.content(), "state_hash": self.state_hash, "revision": self.revision, "updated_at": updated}

    @classmethod
    def from_output(cls, record: Mapping[str, Any]) -> ListingState:
        """The inverse of ``to_output()`` (``state_hash`` and ``missing`` are derived)."""
        hero, coverage, counts = record["hero"], record["coverage"], record["counts"]
        return cls(
            listing_id=record["listing_id"],
            hero_rule=HeroRule(hero["rule"]),
            hero_reason=HeroReason(hero["reason"]),
            hero_image_id=hero["image_id"],
            hero_position=hero["position"],
            required_positions=tuple(coverage["required"]),
            covered_positions=tuple(coverage["covered"]),
            coverage_score=float(coverage["score"]),
            image_count=int(counts["images"]),
            banner_free_count=int(counts["banner_free"]),
            banner_share=float(record["banner_share"]),
            feed=tuple(record["feed"]),
            model_versions=tuple(record["model_versions"]),
            updated_at=datetime.fromisoformat(record["updated_at"]),
            revision=int(record["revision"]),
        )


def listing_order(image: ImageResult) -> tuple[bool, int, str]:
    """Listing order: by position_index, images without one last, ties by image_id."""
    return image.position_index is None, image.position_index or 0, image.image_id


def compute_state(
    listing_id: str, images: Iterable[ImageResult], rules: ListingRules, *, updated_at: datetime | None = None
) -> ListingState:
    """The state of a listing from its surviving image results (one per image_id)."""
    ordered = sorted(_one_per_image(images), key=listing_order)
    free = [i for i in ordered if not i.has_banner]
    reason, hero = _hero(ordered, free, rules)
    covered = {p for i in ordered for p in rules.covered_by(i.position)}
    required = rules.required_positions
    return ListingState(
        listing_id=listing_id,
        hero_rule=rules.hero_rule,
        hero_reason=reason,
        hero_image_id=hero.image_id if hero else None,
        hero_position=hero.position if hero else None,
        required_positions=required,
        covered_positions=tuple(p for p in required if p in covered),
        coverage_score=_share(sum(p in covered for p in required), len(required), empty=1.0),
        image_count=len(ordered),
        banner_free_count=len(free),
        banner_share=_share(len(ordered) - len(free), len(ordered), empty=0.0),
        feed=tuple(i.image_id for i in free),
        model_versions=tuple(sorted({i.model_version for i in ordered}, key=lambda v: (version_key(v), v))),
        updated_at=updated_at or datetime.now(UTC),
    )


def _one_per_image(images: Iterable[ImageResult]) -> list[ImageResult]:
    by_id: dict[str, ImageResult] = {}
    for image in images:
        if by_id.setdefault(image.image_id, image) != image:
            raise ValueError(f"two different results for image {image.image_id!r}")
    return list(by_id.values())


def _hero(
    ordered: Sequence[ImageResult], free: Sequence[ImageResult], rules: ListingRules
) -> tuple[HeroReason, ImageResult | None]:
    if not ordered:
        return HeroReason.NO_IMAGES, None
    if not free:
        return HeroReason.NO_BANNER_FREE_IMAGE, None
    if rules.hero_rule is HeroRule.PREFERRED_POSITION:
        rank = {p: n for n, p in enumerate(rules.preferred_positions)}
        best = min(free, key=lambda i: rank.get(i.position, len(rank)))  # min is stable: listing order breaks ties
        if best.position in rank:
            return HeroReason.PREFERRED_POSITION, best
    return HeroReason.FIRST_BANNER_FREE, free[0]


def _share(part: int, whole: int, *, empty: float) -> float:
    return round(part / whole, 6) if whole else empty
