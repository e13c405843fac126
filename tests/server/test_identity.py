from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import idnumbers as identity


def test_known_numbers() -> None:
    # The worked example of GB 11643-1999 and a number ending in a digit.
    assert identity.checksum_ok("11010519491231002X")
    assert identity.check_char("11010519491231002") == "X"
    assert identity.checksum_ok(identity.make_id_number("110101", "19900307", "451"))


@pytest.mark.parametrize(
    "bad", ["11010519491231002", "110105194912310021", "1101051949123100XX", "", "abc"]
)
def test_bad_numbers(bad: str) -> None:
    assert not identity.checksum_ok(bad)


def test_mask() -> None:
    assert identity.mask("110101199003074514") == "1101**********4514"
    assert identity.mask("1234") == "****"


@given(st.text(alphabet="0123456789", min_size=17, max_size=17), st.sampled_from("0123456789X"))
def test_exactly_one_check_char_is_right(first17: str, last: str) -> None:
    assert identity.checksum_ok(first17 + last) == (identity.check_char(first17) == last)
