"""Contact sheets: label a page of photos at once, through the app's JSON interface.

``claim`` signs in, claims a page of images, and writes a numbered grid (PNG), each photo as a
JPEG, and a JSON file that maps the numbers to image ids. ``submit`` reads answers typed against
those numbers, one line per photo or per group of photos::

    1 front_three_quarter
    2,3,7 interior
    4 side banner        # "banner" (or "b") marks an overlay
    5 unsure
    6 skip

Positions may be abbreviated to any unambiguous prefix (``front_t``, ``dash``, ``eng``); a few
short forms are known (``f34``, ``r34``, ``fq``, ``rq``). Answers go through the same queue,
consensus and rules as the one-image page.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from PIL import Image, ImageDraw, ImageFont

SHORT_FORMS = {"f34": "front_three_quarter", "fq": "front_three_quarter", "r34": "rear_three_quarter",
               "rq": "rear_three_quarter", "int": "interior", "dash": "dashboard"}  # fmt: skip
BANNER_WORDS = frozenset({"b", "banner"})
VERDICT_WORDS = frozenset({"unsure", "skip"})


class SheetError(ValueError):
    """An answer line or a reply from the app that cannot be used; the message says which."""


class AppClient:
    """A signed-in session with the labelling app; ``async with`` closes it."""

    def __init__(self, base_url: str) -> None:
        self.base = base_url.rstrip("/")
        self._http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf = ""

    async def __aenter__(self) -> AppClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self._http.close()

    async def sign_in(self, username: str, password: str) -> None:
        async with self._http.get(f"{self.base}/sign-in") as resp:
            page = await resp.text()
        token = re.search(r'name="csrf" value="([^"]+)"', page)
        if token is None:
            raise SheetError("the sign-in page has no CSRF token")
        form = {"username": username, "password": password, "csrf": token.group(1)}
        async with self._http.post(f"{self.base}/sign-in", data=form, allow_redirects=False) as resp:
            if resp.status != 303:
                raise SheetError(f"sign-in refused (HTTP {resp.status})")

    async def claim(self, count: int) -> dict[str, Any]:
        async with self._http.get(f"{self.base}/api/tasks", params={"n": str(count)}) as resp:
            resp.raise_for_status()
            body: dict[str, Any] = await resp.json()
        self.csrf = body["csrf"]
        return body

    async def image(self, path: str) -> bytes:
        async with self._http.get(self.base + path) as resp:
            resp.raise_for_status()
            return await resp.read()

    async def submit(self, answers: list[dict[str, Any]]) -> dict[str, Any]:
        if not self.csrf:  # the session's token from a page that claims nothing (every page carries it)
            async with self._http.get(f"{self.base}/guidelines") as resp:
                found = re.search(r'name="csrf" value="([^"]+)"', await resp.text())
            if found is None:
                raise SheetError("the app's pages carry no CSRF token")
            self.csrf = found.group(1)
        form = {"csrf": self.csrf, "answers": json.dumps(answers)}
        async with self._http.post(f"{self.base}/api/answers", data=form) as resp:
            if resp.status not in (200, 207):
                raise SheetError(f"answers refused (HTTP {resp.status}): {(await resp.text())[:200]}")
            reply: dict[str, Any] = await resp.json()
            return reply


@dataclass(frozen=True, slots=True)
class Sheet:
    """A claimed page: numbers to image ids, the rules version and positions it was claimed under."""

    numbers: dict[int, str]
    guidelines_version: int
    positions: tuple[str, ...]

    def save(self, path: Path) -> None:
        data = {"numbers": self.numbers, "guidelines_version": self.guidelines_version, "positions": self.positions}
        path.write_text(json.dumps(data, indent=1))

    @classmethod
    def load(cls, path: Path) -> Sheet:
        data = json.loads(path.read_text())
        return cls(
            {int(k): v for k, v in data["numbers"].items()}, data["guidelines_version"], tuple(data["positions"])
        )


def grid(images: list[bytes], columns: int = 4, cell_px: int = 400) -> Image.Image:
    """The photos as a numbered grid, each fitted into a cell of ``cell_px`` x 3/4 ``cell_px``."""
    cell_h = cell_px * 3 // 4
    rows = max(1, -(-len(images) // columns))
    sheet = Image.new("RGB", (columns * cell_px, rows * (cell_h + 4)), "white")
    draw = ImageDraw.Draw(sheet)
    font_px = max(14, cell_px // 14)
    font = ImageFont.load_default(size=font_px)
    for i, data in enumerate(images):
        with Image.open(io.BytesIO(data)) as img:
            thumb = img.convert("RGB")
        thumb.thumbnail((cell_px - 4, cell_h - 4))
        x, y = (i % columns) * cell_px, (i // columns) * (cell_h + 4)
        sheet.paste(thumb, (x + (cell_px - thumb.width) // 2, y + (cell_h - thumb.height) // 2))
        draw.rectangle((x, y, x + 3 + font_px * 2, y + font_px + 6), fill="yellow")
        draw.text((x + 3, y + 2), str(i + 1), fill="black", font=font)
    return sheet


def resolve_position(word: str, positions: tuple[str, ...]) -> str:
    """A position from its name, a short form or an unambiguous prefix."""
    word = SHORT_FORMS.get(word, word)
    if word in positions:
        return word
    matches = [p for p in positions if p.startswith(word)]
    if len(matches) != 1:
        raise SheetError(f"{word!r} is {'ambiguous' if matches else 'not a position'}")
    return matches[0]


def parse_answers(text: str, sheet: Sheet) -> list[dict[str, Any]]:
    """The answers in ``text`` (see the module docstring); every number of the sheet at most once."""
    answers: dict[int, dict[str, Any]] = {}
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip().lower()
        if not line:
            continue
        numbers_part, *words = line.split()
        try:
            numbers = [int(n) for n in numbers_part.split(",") if n]
        except ValueError:
            raise SheetError(f"line {line_no}: {numbers_part!r} is not a list of numbers") from None
        answer = _answer(words, sheet, line_no)
        for number in numbers:
            if number not in sheet.numbers:
                raise SheetError(f"line {line_no}: no photo {number} on this sheet")
            if number in answers:
                raise SheetError(f"line {line_no}: photo {number} answered twice")
            answers[number] = {"image_id": sheet.numbers[number], **answer}
    return [answers[n] for n in sorted(answers)]


def _answer(words: list[str], sheet: Sheet, line_no: int) -> dict[str, Any]:
    base = {"guidelines_version": sheet.guidelines_version}
    if len(words) == 1 and words[0] in VERDICT_WORDS:
        return {**base, "verdict": words[0]}
    banner = bool(BANNER_WORDS & set(words))
    rest = [w for w in words if w not in BANNER_WORDS]
    if len(rest) != 1:
        raise SheetError(f"line {line_no}: give one position (and 'banner' if there is one), or unsure / skip")
    try:
        position = resolve_position(rest[0], sheet.positions)
    except SheetError as exc:
        raise SheetError(f"line {line_no}: {exc}") from None
    return {**base, "verdict": "label", "banner": banner, "position": position}


async def claim_sheet(client: AppClient, count: int, out: Path, columns: int, cell_px: int) -> tuple[Path, int]:
    """Claim up to ``count`` images and write ``sheet-N.png``, ``sheet-N/<n>.jpg`` and ``sheet-N.json``."""
    body = await client.claim(count)
    tasks = body["tasks"]
    images = [await client.image(task["image"]) for task in tasks]
    sheet = Sheet(
        {n: t["image_id"] for n, t in enumerate(tasks, start=1)}, body["guidelines_version"], tuple(body["positions"])
    )
    path = await asyncio.to_thread(write_sheet, sheet, images, out, columns, cell_px)
    return path, len(tasks)


def write_sheet(sheet: Sheet, images: list[bytes], out: Path, columns: int, cell_px: int) -> Path:
    """Write the next free ``sheet-N`` in ``out``; return the PNG's path."""
    out.mkdir(parents=True, exist_ok=True)
    index = 1 + max((int(p.stem.split("-")[1]) for p in out.glob("sheet-*.json")), default=0)
    folder = out / f"sheet-{index}"
    folder.mkdir(exist_ok=True)
    for number, data in enumerate(images, start=1):
        (folder / f"{number}.jpg").write_bytes(data)
    sheet.save(out / f"sheet-{index}.json")
    if images:
        grid(images, columns, cell_px).save(out / f"sheet-{index}.png")
    return out / f"sheet-{index}.png"
