"""Agreement between labellers: Cohen's kappa per question over images that two people labelled.

For each image with at least two labels, the first two (in answer order) form a pair; kappa is
taken over all pairs, the two answers standing for "first" and "second" labeller. It corrects the
raw agreement for the agreement expected by chance from how often each answer is given.

The model's suggestion is split out too: answers given with it shown, with it hidden on a draw
(same images, so the difference is its pull on the labellers), and on the random sample (never
shown), each as agreement with the model and with the final label.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg


@dataclass(frozen=True, slots=True)
class Question:
    """Agreement on one question."""

    name: str
    pairs: int
    observed: float
    kappa: float


@dataclass(frozen=True, slots=True)
class Suggested:
    """Labels given where the model had a suggestion, on one kind of draw."""

    draw: str  # shown | hidden | random (hidden: the random sample)
    answers: int
    with_model: int  # the same banner and position as the model
    decided: int  # on images with a final label
    with_final: int  # the same as the final label

    def as_dict(self) -> dict[str, Any]:
        return {
            "answers": self.answers,
            "agree_with_model": _share(self.with_model, self.answers),
            "decided": self.decided,
            "agree_with_final": _share(self.with_final, self.decided),
        }


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass
class Report:
    """Agreement over every doubly labelled image."""

    images: int = 0
    questions: list[Question] = field(default_factory=list)
    disagreements: dict[tuple[str, str], int] = field(default_factory=dict)  # position pairs, sorted
    suggestion: list[Suggested] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "suggestion": {s.draw: s.as_dict() for s in self.suggestion},
            "images": self.images,
            "questions": {q.name: {"pairs": q.pairs, "observed": q.observed, "kappa": q.kappa} for q in self.questions},
            "position_disagreements": [
                {"a": a, "b": b, "count": n} for (a, b), n in sorted(self.disagreements.items(), key=lambda kv: -kv[1])
            ],
        }


def cohen_kappa(pairs: Sequence[tuple[Hashable, Hashable]]) -> tuple[float, float]:
    """(observed agreement, kappa) of paired answers; kappa is 1.0 when chance agreement is already 1."""
    if not pairs:
        return float("nan"), float("nan")
    n = len(pairs)
    observed = sum(a == b for a, b in pairs) / n
    first, second = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    expected = sum(first[k] * second[k] for k in first) / (n * n)
    kappa = 1.0 if expected == 1 else (observed - expected) / (1 - expected)
    return observed, kappa


async def pairwise(pool: asyncpg.Pool) -> Report:
    """Kappa for the banner and the position question over images with two or more labels."""
    rows = await pool.fetch("""
        SELECT image_id, banner, position FROM (
            SELECT image_id, banner, position,
                row_number() OVER (PARTITION BY image_id ORDER BY answered_at, user_id) AS k
            FROM label_answers WHERE verdict = 'label') a
        WHERE k <= 2 ORDER BY image_id, k""")
    answers: dict[str, list[tuple[bool, str]]] = {}
    for row in rows:
        answers.setdefault(row["image_id"], []).append((row["banner"], row["position"]))
    pairs = [(a[0], a[1]) for a in answers.values() if len(a) == 2]
    report = Report(images=len(pairs))
    for name, index in (("banner", 0), ("position", 1)):
        observed, kappa = cohen_kappa([(x[index], y[index]) for x, y in pairs])
        report.questions.append(Question(name, len(pairs), observed, kappa))
    report.disagreements = dict(Counter(tuple(sorted((x[1], y[1]))) for x, y in pairs if x[1] != y[1]))  # type: ignore[misc]
    report.suggestion = await suggestion_split(pool)
    return report


async def suggestion_split(pool: asyncpg.Pool) -> list[Suggested]:
    """Labels given with the model's suggestion shown, hidden on a draw, and on the random sample."""
    rows = await pool.fetch("""
        SELECT CASE WHEN a.suggestion_shown THEN 'shown' WHEN t.reason = 'random' THEN 'random' ELSE 'hidden' END
                AS draw,
            count(*) AS answers,
            count(*) FILTER (WHERE a.banner = a.suggested_banner AND a.position = a.suggested_position) AS with_model,
            count(*) FILTER (WHERE t.status IN ('final', 'resolved')) AS decided,
            count(*) FILTER (WHERE t.status IN ('final', 'resolved') AND a.banner = t.banner
                             AND a.position = t.position) AS with_final
        FROM label_answers a JOIN label_tasks t USING (image_id)
        WHERE a.verdict = 'label' AND a.suggestion_shown IS NOT NULL
        GROUP BY 1""")
    found = {r["draw"]: r for r in rows}
    return [
        Suggested(draw, *(found[draw][k] for k in ("answers", "with_model", "decided", "with_final")))
        if draw in found
        else Suggested(draw, 0, 0, 0, 0)
        for draw in ("shown", "hidden", "random")
    ]


@dataclass
class LabellerConfusion:
    """One labeller's labels against the final labels of the images they labelled (consensus or admin)."""

    username: str
    positions: Counter[tuple[str, str]] = field(default_factory=Counter)  # (final, theirs) -> answers
    banner: Counter[tuple[bool, bool]] = field(default_factory=Counter)  # (final, theirs) -> answers

    def position_agreement(self, final: str) -> tuple[int, int]:
        """(answers that matched, answers) on images whose final position is ``final``."""
        total = sum(n for (f, _), n in self.positions.items() if f == final)
        return self.positions[(final, final)], total

    def banner_agreement(self) -> tuple[int, int]:
        return sum(n for (f, t), n in self.banner.items() if f == t), sum(self.banner.values())


async def confusion_by_labeller(pool: asyncpg.Pool) -> list[LabellerConfusion]:
    """Per labeller who gave a label on a decided image: their position and banner answers against the final
    label, as counts of (final, theirs); by user name."""
    rows = await pool.fetch("""
        SELECT u.username, t.position AS final_position, a.position AS their_position,
            t.banner AS final_banner, a.banner AS their_banner, count(*) AS n
        FROM label_answers a JOIN label_users u ON u.id = a.user_id JOIN label_tasks t USING (image_id)
        WHERE a.verdict = 'label' AND t.status IN ('final', 'resolved')
        GROUP BY 1, 2, 3, 4, 5 ORDER BY 1""")
    found: dict[str, LabellerConfusion] = {}
    for r in rows:
        one = found.setdefault(r["username"], LabellerConfusion(r["username"]))
        one.positions[(r["final_position"], r["their_position"])] += r["n"]
        one.banner[(r["final_banner"], r["their_banner"])] += r["n"]
    return list(found.values())
