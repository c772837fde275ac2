"""The labelling loop's pure parts: consensus, passwords, the hold-out split, answers, display images."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from pydantic import ValidationError

from processor.errors import NotAnImage, TooLarge
from processor.labelling.config import LabelConfig
from processor.labelling.consensus import Vote, decide
from processor.labelling.export import file_stem, held_out
from processor.labelling.images import to_display_jpeg
from processor.labelling.passwords import check_strength, hash_password, verify_password
from processor.labelling.tasks import QueueError
from processor.labelling.views_label import parse_answer, position_keys

FRONT = Vote("label", False, "front")
SIDE = Vote("label", False, "side")
FRONT_BANNER = Vote("label", True, "front")


@pytest.mark.parametrize(
    ("votes", "status"),
    [
        ([], "open"),
        ([FRONT, FRONT], "open"),
        ([FRONT, FRONT, FRONT], "final"),
        ([FRONT, SIDE, FRONT, SIDE, FRONT], "final"),
        ([FRONT, SIDE, FRONT, SIDE], "open"),  # one slot left, and 2 + 1 can still reach 3
        ([FRONT, SIDE, FRONT_BANNER], "open"),  # 1 + 2 slots left can still reach 3
        ([FRONT, SIDE, FRONT_BANNER, Vote("unsure")], "review"),  # 1 + 1 left cannot reach 3
        ([FRONT, FRONT, SIDE, SIDE, Vote("unsure")], "review"),
        ([Vote("skip")] * 4 + [FRONT, FRONT, FRONT], "final"),  # skips use no slot
        ([Vote("skip")] * 5, "review"),  # nobody could answer it
        ([Vote("unsure")] * 3, "review"),
    ],
)
def test_consensus_is_k_identical_labels_of_at_most_n(votes: list[Vote], status: str) -> None:
    assert decide(votes, agree=3, max_labellers=5).status == status


def test_a_final_label_is_the_agreed_one() -> None:
    outcome = decide([FRONT_BANNER, SIDE, FRONT_BANNER, FRONT_BANNER], agree=3, max_labellers=5)
    assert outcome.label == (True, "front") and outcome.support == 3


def test_k_cannot_exceed_n() -> None:
    with pytest.raises(ValidationError):
        LabelConfig(agree=4, max_labellers=3)
    assert LabelConfig().agree == 3 and LabelConfig().max_labellers == 5  # the documented defaults


def test_passwords_are_salted_scrypt_hashes() -> None:
    first, second = hash_password("a long passphrase"), hash_password("a long passphrase")
    assert first.startswith("scrypt$") and first != second  # salted
    assert verify_password("a long passphrase", first) and verify_password("a long passphrase", second)
    assert not verify_password("a long passphrasE", first)
    assert not verify_password("anything", "not-a-hash") and not verify_password("x", "md5$1$2$3$4$5")
    assert check_strength("short") is not None and check_strength("long enough!") is None


def test_the_hold_out_depends_on_the_image_id_only() -> None:
    ids = [f"img-{i}" for i in range(5000)]
    share = sum(held_out(i, 20) for i in ids) / len(ids)
    assert 0.18 < share < 0.22
    assert [held_out(i, 20) for i in ids] == [held_out(i, 20) for i in ids]
    assert not any(held_out(i, 0) for i in ids) and all(held_out(i, 100) for i in ids)
    assert "/" not in file_stem("../../etc/passwd") and len(file_stem("x")) == 24


def test_every_position_gets_a_key_that_is_not_y_n_u_or_s() -> None:
    positions = tuple(f"p{i}" for i in range(11))
    keys = [k for _, k in position_keys(positions)]
    assert len(set(keys)) == 11 and not set(keys) & {"y", "n", "u", "s"}


def form(**fields: str) -> dict[str, object]:
    return {"image_id": "img-1", "guidelines_version": "1", **fields}


def test_answers_are_checked_against_the_label_set() -> None:
    positions = ("front", "side")
    answer = parse_answer(form(verdict="label", banner="yes", position="side"), positions)
    assert (answer.verdict, answer.banner, answer.position) == ("label", True, "side")
    assert parse_answer(form(verdict="skip"), positions).banner is None
    for bad in (
        form(verdict="label", banner="yes", position="roof"),
        form(verdict="label", banner="maybe", position="side"),
        form(verdict="label", position="side"),
        form(verdict="delete"),
        form(verdict="skip", guidelines_version="1; DROP"),
        {"verdict": "skip", "guidelines_version": "1"},
    ):
        with pytest.raises(QueueError):
            parse_answer(bad, positions)


def jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def test_display_images_are_fresh_jpegs_no_larger_than_asked() -> None:
    shown = to_display_jpeg(jpeg(3000, 1000), 1280, 50_000_000)
    with Image.open(io.BytesIO(shown)) as img:
        assert img.format == "JPEG" and img.size == (1280, 427)
    with pytest.raises(TooLarge):
        to_display_jpeg(jpeg(3000, 1000), 1280, 1_000_000)
    for hostile in (b"<html><script>alert(1)</script></html>", b'<svg onload="alert(1)"/>', b""):
        with pytest.raises(NotAnImage):
            to_display_jpeg(hostile, 1280, 50_000_000)


def test_exported_ids_never_become_spreadsheet_formulas() -> None:
    from processor.labelling.export import spreadsheet_safe

    assert spreadsheet_safe('=HYPERLINK("http://evil","x")') == '\'=HYPERLINK("http://evil","x")'
    assert [spreadsheet_safe(v) for v in ("+1", "-2", "@x", "\tx")] == ["'+1", "'-2", "'@x", "'\tx"]
    assert spreadsheet_safe("img-1") == "img-1"


def test_position_keys_walk_round_the_car() -> None:
    shipped = ("dashboard", "detail", "engine", "front", "front_three_quarter", "interior", "other", "rear",
               "rear_three_quarter", "side", "trunk", "wheel")  # fmt: skip
    assert position_keys(shipped)[:5] == [
        ("front", "1"), ("front_three_quarter", "2"), ("side", "3"), ("rear_three_quarter", "4"), ("rear", "5")
    ]  # fmt: skip
    assert position_keys(shipped)[-1][0] == "wheel"  # a label outside the walk comes last
