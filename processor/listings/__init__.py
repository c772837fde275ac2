"""The listing actor: each listing's state (hero image, coverage, banner-free feed) as a pure
function of its images' latest surviving results (``rules``), stored and recomputed in
Postgres (``store``); the Faust agent that publishes ``listing-updates`` sits on top."""

from .rules import (
    DEFAULT_COVERS,
    DEFAULT_PREFERRED,
    DEFAULT_REQUIRED,
    UNSURE,
    HeroReason,
    HeroRule,
    ImageResult,
    ListingRules,
    ListingState,
    compute_state,
    listing_order,
)
from .store import ListingStore

__all__ = [
    "DEFAULT_COVERS",
    "DEFAULT_PREFERRED",
    "DEFAULT_REQUIRED",
    "UNSURE",
    "HeroReason",
    "HeroRule",
    "ImageResult",
    "ListingRules",
    "ListingState",
    "ListingStore",
    "compute_state",
    "listing_order",
]
