"""The shared ID-number rules: masking, pseudonyms and clear-ID detection (core.idnumbers)."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.idnumbers import (
    CLEAR_ID,
    clear_ids_in_text,
    contains_clear_id,
    find_clear_ids,
    is_masked_id,
    mask,
    pseudonym,
    redact,
)

ID = "110101199003074514"
ID_X = "11010519491231002X"
PERMIT = "USA110101990030"
KEY = bytes.fromhex("00112233445566778899aabbccddeeff")


def test_mask_keeps_region_and_last_four() -> None:
    assert mask(ID) == "1101**********4514"
    assert mask(ID_X) == "1101**********002X"
    assert mask("123456789") == "1234*6789"


@pytest.mark.parametrize("short", ["", "1", "12345678"])
def test_mask_hides_short_strings_completely(short: str) -> None:
    assert mask(short) == "*" * len(short)


@given(st.text(alphabet="0123456789X", min_size=0, max_size=40))
def test_mask_never_leaves_an_id_in_clear(value: str) -> None:
    masked = mask(value)
    assert len(masked) == len(value)
    assert not contains_clear_id(masked)
    if len(value) >= 9:
        assert masked[:4] == value[:4] and masked[-4:] == value[-4:]
        assert set(masked[4:-4]) == {"*"}


def test_pseudonym_is_keyed_hmac_sha256() -> None:
    expected = hmac.new(KEY, ID.encode(), hashlib.sha256).hexdigest()
    assert pseudonym(KEY, ID) == expected
    assert pseudonym(KEY, ID) == pseudonym(KEY, ID)  # stable across calls
    assert len(expected) == 64 and int(expected, 16) >= 0


def test_pseudonym_depends_on_key_and_number_not_case() -> None:
    assert pseudonym(KEY, ID) != pseudonym(b"other key", ID)
    assert pseudonym(KEY, ID) != pseudonym(KEY, ID_X)
    assert pseudonym(KEY, ID_X.lower()) == pseudonym(KEY, ID_X)
    assert pseudonym(KEY, f" {ID}\n") == pseudonym(KEY, ID)


def test_pseudonym_refuses_empty_key() -> None:
    with pytest.raises(ValueError, match="pseudonym key"):
        pseudonym(b"", ID)


def test_regex_and_redact() -> None:
    assert CLEAR_ID.fullmatch(ID) and CLEAR_ID.fullmatch(ID_X.lower())
    assert not contains_clear_id("1101**********4514")
    assert not contains_clear_id("1" * 19)  # not a standalone 18-character word
    assert not contains_clear_id(pseudonym(KEY, ID))
    assert redact(f"a {ID} b {ID_X}.") == "a 1101**********4514 b 1101**********002X."


def test_find_clear_ids_searches_nested_values_keys_and_ints() -> None:
    value = {"a": [1, {"b": f"x {ID} y"}], ID_X: True, "n": int(ID), "ok": "1101**1234"}
    assert sorted(find_clear_ids(value)) == sorted(
        [("a[1].b", "1101**********4514"), ("", "1101**********002X"), ("n", "1101**********4514")]
    )
    assert find_clear_ids({"masked": mask(ID), "flag": True}) == []


@pytest.mark.parametrize("permit", [PERMIT, PERMIT.lower(), f"permit {PERMIT}."])
def test_permit_numbers_are_clear_ids_too(permit: str) -> None:
    """The 15-character permit numbers of the 2017 foreigner card: the kiosk once missed
    them while the server refused them (issue 9)."""
    assert contains_clear_id(permit)
    assert PERMIT not in redact(permit).upper()
    assert "USA1*******0030" in redact(permit).upper()


@pytest.mark.parametrize(
    "text", ["a" * 64, "USA12345678901234", "XUSA123456789012", "1101**********4514"]
)
def test_longer_words_and_masked_numbers_are_not_clear_ids(text: str) -> None:
    assert not contains_clear_id(text)


def test_counters_are_not_ids_but_other_integers_are() -> None:
    """An event's ``mono_ns`` passes 18 digits after ~3 years of uptime: it must not make the
    journal refuse every event, while an ID sent as a JSON integer elsewhere is still found."""
    event = {"seq": 1, "mono_ns": int(ID), "detail": {"n": int(ID)}}
    assert find_clear_ids(event, counters={"seq", "mono_ns"}) == [
        ("detail.n", "1101**********4514")
    ]


FULL_WIDTH = str.maketrans("0123456789X", "０１２３４５６７８９Ｘ")


@pytest.mark.parametrize(
    "disguised",
    [
        ID.translate(FULL_WIDTH),  # full-width digits
        "1101 0119 9003 0745 14",  # blanks
        "110101-19900307-4514",  # dashes
        "110101－19900307－4514",  # full-width dashes
        f"ID{ID}",  # letters stuck to it
        f"no.{ID}x",
        ID_X.lower(),
        "".join(chr(0x0660 + int(c)) for c in ID),  # Arabic-Indic digits
        f"permit {PERMIT.lower()}",
        "USA 110101990030",
    ],
)
def test_disguised_numbers_are_found(disguised: str) -> None:
    """Issue 10: the server accepted each of these forms in audit events."""
    assert contains_clear_id(disguised), disguised
    assert find_clear_ids({"detail": disguised})
    assert ID not in redact(disguised) and "1101**********4514" not in disguised


@pytest.mark.parametrize(
    "innocent",
    [
        "2026-11-28T07:25:21.123456+00:00",
        "2026-11-28 07:25:21",
        "ab" * 32,  # a pseudonym
        "0123456789abcdef" * 4,  # a hash with long digit runs
        "ab" + ID + "cd" * 22,  # a hash whose digits happen to carry a right check character
        "11010119900307451" + "0",  # 18 digits with a wrong check character, but dashed:
    ],
)
def test_timestamps_hashes_and_wrong_checksums_with_separators_are_not(innocent: str) -> None:
    dashed = (
        innocent if not innocent.isdigit() else "-".join(innocent[i : i + 6] for i in (0, 6, 12))
    )
    assert not contains_clear_id(dashed), dashed


@given(
    st.lists(st.sampled_from(["", " ", "-", "－", "\u00a0"]), min_size=17, max_size=17),
    st.sampled_from(["", "ID", "no.", "身份证"]),
    st.booleans(),
)
def test_any_disguise_of_a_real_number_is_found(seps: list[str], prefix: str, wide: bool) -> None:
    number = ID_X if wide else ID
    text = prefix + "".join(c + s for c, s in zip(number, [*seps, ""], strict=True))
    if wide:
        text = text.translate(FULL_WIDTH)
    assert contains_clear_id(text), text
    assert mask(number) in clear_ids_in_text(text)


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("1101**********4514", True),
        ("1101**********002X", True),
        ("USA1*******0030", True),
        ("11010119900307451*", False),  # a single star
        ("1101*********74514", False),
        ("1101**********451", False),
        ("**********", False),
        ("", False),
    ],
)
def test_masked_ids_have_exactly_the_masks_shape(text: str, ok: bool) -> None:
    assert is_masked_id(text) is ok
    if ok:
        assert not contains_clear_id(text)
