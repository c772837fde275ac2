"""Consensus: when the answers of several labellers make an image's label final.

An answer is a label (banner yes/no and a position), "unsure", or "skip". A label is final
when at least ``agree`` (K) labellers gave exactly the same one. An image is shown to at
most ``max_labellers`` (N) people who answer with a label or "unsure"; skips do not use a
slot. It goes to the admin's review queue as soon as K identical labels can no longer be
reached within N, or when N people skipped it. A team smaller than N counts too: only the
active people who have not answered yet can still add a label, so three labellers with N = 5
send a disputed image to review instead of leaving it open for ever.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Verdict = Literal["label", "unsure", "skip"]
Status = Literal["open", "final", "review"]
VERDICTS: tuple[Verdict, ...] = ("label", "unsure", "skip")


@dataclass(frozen=True, slots=True)
class Vote:
    """One labeller's answer."""

    verdict: Verdict
    banner: bool | None = None
    position: str | None = None

    @property
    def label(self) -> tuple[bool, str] | None:
        if self.verdict != "label" or self.banner is None or self.position is None:
            return None
        return (self.banner, self.position)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the votes so far decide."""

    status: Status
    label: tuple[bool, str] | None = None  # (banner, position) when final
    support: int = 0  # votes for the leading label


def decide(votes: Sequence[Vote], agree: int, max_labellers: int, available: int | None = None) -> Outcome:
    """The image's status after ``votes`` (in any order); ``available``: people who could still answer."""
    counted = [v for v in votes if v.verdict != "skip"]
    tally = Counter(label for v in counted if (label := v.label) is not None)
    ranked = tally.most_common(2)
    support = ranked[0][1] if ranked else 0
    if support >= agree and (len(ranked) == 1 or ranked[1][1] < support):
        return Outcome("final", ranked[0][0], support)
    slots_left = max(0, max_labellers - len(counted))
    if available is not None:
        slots_left = min(slots_left, available)
    skipped = len(votes) - len(counted)
    if support + slots_left < agree or skipped >= max_labellers:
        return Outcome("review", None, support)
    return Outcome("open", None, support)
