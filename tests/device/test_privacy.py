"""ID numbers never leave memory in clear: masking, pseudonyms and log redaction."""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device.privacy import (
    ID_NUMBER_RE,
    IdNumberRedactor,
    contains_id_number,
    find_id_numbers,
    mask_id,
    pseudonym,
    redact,
)

ID = "110101199003074514"
ID_X = "11010519491231002X"
KEY = bytes.fromhex("00112233445566778899aabbccddeeff")


def test_mask_keeps_region_and_last_four() -> None:
    assert mask_id(ID) == "1101**********4514"
    assert mask_id(ID_X) == "1101**********002X"
    assert mask_id("123456789") == "1234*6789"


@pytest.mark.parametrize("short", ["", "1", "12345678"])
def test_mask_hides_short_strings_completely(short: str) -> None:
    assert mask_id(short) == "*" * len(short)


@given(st.text(alphabet="0123456789X", min_size=0, max_size=40))
def test_mask_never_leaves_an_id_in_clear(value: str) -> None:
    masked = mask_id(value)
    assert len(masked) == len(value)
    assert not contains_id_number(masked)
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
    with pytest.raises(ValueError, match="fleet key"):
        pseudonym(b"", ID)


def test_regex_and_redact() -> None:
    assert ID_NUMBER_RE.fullmatch(ID) and ID_NUMBER_RE.fullmatch(ID_X.lower())
    assert not contains_id_number("1101**********4514")
    assert not contains_id_number("1" * 19)  # not a standalone 18-character word
    assert not contains_id_number(pseudonym(KEY, ID))
    assert redact(f"a {ID} b {ID_X}.") == "a 1101**********4514 b 1101**********002X."


def test_find_id_numbers_searches_nested_values_keys_and_ints() -> None:
    value = {"a": [1, {"b": f"x {ID} y"}], ID_X: True, "n": int(ID), "ok": "1101**1234"}
    assert sorted(find_id_numbers(value)) == sorted(
        ["1101**********4514", "1101**********002X", "1101**********4514"]
    )
    assert find_id_numbers({"masked": mask_id(ID), "flag": True}) == []


@pytest.fixture
def redacted_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(IdNumberRedactor())
    logger = logging.getLogger("tests.device.privacy")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)
    handler.close()


def test_redactor_masks_message_and_args(
    redacted_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = redacted_log
    logger.info("card %s read", ID)
    logger.info("as number %d", int(ID))
    logger.warning(f"inline {ID_X}")
    logger.getChild("sub").info("child %s", ID)  # propagated records are filtered too
    out = stream.getvalue()
    assert ID not in out and ID_X not in out
    assert out.count("1101**********4514") == 3
    assert "1101**********002X" in out


def test_redactor_masks_tracebacks(redacted_log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = redacted_log
    try:
        raise ValueError(f"unknown person {ID}")
    except ValueError:
        logger.exception("lookup failed")
    out = stream.getvalue()
    assert ID not in out
    assert "ValueError: unknown person 1101**********4514" in out


def test_redactor_leaves_clean_records_alone() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "tap %s took %d ms", ("k1", 5), None)
    assert IdNumberRedactor().filter(record) is True
    assert record.msg == "tap %s took %d ms" and record.args == ("k1", 5)
    assert record.getMessage() == "tap k1 took 5 ms"
