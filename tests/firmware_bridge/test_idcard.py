"""Card text decoding (resident, J, I, Y), GB 11643 check characters and ID masking."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge import idcard
from firmware_bridge.errors import TextDecodeError
from firmware_bridge.samsim import SAMPLE_CARDS

WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]


def check_char(first17: str) -> str:
    """Independent GB 11643 check character, straight from the sheet."""
    return "10X98765432"[sum(int(d) * w for d, w in zip(first17, WEIGHTS, strict=True)) % 11]


def valid_id(first17: str) -> str:
    return first17 + check_char(first17)


def field(value: str, size: int) -> bytes:
    """One UCS-2 LE field right-padded with U+0020, built without the module under test."""
    raw = value.encode("utf-16-le")
    assert len(raw) <= size
    return raw + b" \x00" * ((size - len(raw)) // 2)


def layout(*fields: tuple[str, int]) -> bytes:
    text = b"".join(field(v, n) for v, n in fields)
    assert len(text) == 256
    return text


RESIDENT_ID = valid_id("11010119900307123")
J_ID = valid_id("81000019850701015")
Y_ID = valid_id("91115619800102001")


def resident_raw(valid_to="20350601", sex="1", nation="01"):
    return layout(
        ("张三", 30),
        (sex, 2),
        (nation, 4),
        ("19900307", 16),
        ("北京市东城区景山前街4号", 70),
        (RESIDENT_ID, 36),
        ("北京市公安局东城分局", 30),
        ("20150601", 16),
        (valid_to, 16),
        ("", 36),
    )


def test_resident_hand_built_vector():
    card = idcard.decode_text(resident_raw())
    assert card == {
        "card_type": "resident",
        "name": "张三",
        "sex": "1",
        "sex_text": "男",
        "nation": "01",
        "nation_text": "汉",
        "birth": "1990-03-07",
        "address": "北京市东城区景山前街4号",
        "id_number": RESIDENT_ID,
        "id_checksum_ok": True,
        "authority": "北京市公安局东城分局",
        "valid_from": "2015-06-01",
        "valid_to": "2035-06-01",
    }
    assert idcard.encode_text(card) == resident_raw()


def test_long_term_card():
    card = idcard.decode_text(resident_raw(valid_to="长期"))
    assert card["valid_to"] == "长期"
    assert idcard.encode_text(card) == resident_raw(valid_to="长期")


@pytest.mark.parametrize(
    ("code", "text"), [("0", "未知"), ("1", "男"), ("2", "女"), ("9", "未说明"), ("5", "未知")]
)
def test_sex_codes_never_default_to_female(code, text):
    card = idcard.decode_text(resident_raw(sex=code))
    assert card["sex"] == code
    assert card["sex_text"] == text


@pytest.mark.parametrize(
    ("code", "text"), [("56", "基诺"), ("97", "其他"), ("98", "外国血统中国籍人士"), ("99", "")]
)
def test_nation_codes(code, text):
    assert idcard.decode_text(resident_raw(nation=code))["nation_text"] == text


def test_nation_table_is_complete():
    assert sorted(idcard.NATION_TEXT) == [f"{i:02d}" for i in range(1, 57)] + ["97", "98"]


def test_malformed_date_is_kept_raw():
    raw = bytearray(resident_raw())
    raw[36:52] = field("19901301", 16)
    card = idcard.decode_text(bytes(raw))
    assert card["birth"] == "19901301"
    assert idcard.encode_text(card) == bytes(raw)
    raw[36:52] = field("19000229", 16)  # 1900 is not a leap year
    assert idcard.decode_text(bytes(raw))["birth"] == "19000229"
    raw[36:52] = field("20000229", 16)
    assert idcard.decode_text(bytes(raw))["birth"] == "2000-02-29"


def test_nul_padding_is_stripped():
    raw = bytearray(resident_raw())
    raw[0:30] = "张三".encode("utf-16-le") + bytes(26)
    assert idcard.decode_text(bytes(raw))["name"] == "张三"


def test_j_hand_built_vector():
    raw = layout(
        ("陈大文", 30),
        ("1", 2),
        ("", 4),
        ("19850701", 16),
        ("广东省深圳市福田区福华路1号", 70),
        (J_ID, 36),
        ("深圳市公安局", 30),
        ("20190101", 16),
        ("20240101", 16),
        ("H12345678", 18),
        ("01", 4),
        ("", 6),
        ("J", 2),
        ("", 6),
    )
    card = idcard.decode_text(raw)
    assert card["card_type"] == "J"
    assert card["name"] == "陈大文"
    assert card["nation"] == "" and card["nation_text"] == ""
    assert card["id_number"] == J_ID and card["id_checksum_ok"] is True
    assert card["pass_number"] == "H12345678"
    assert card["issue_count"] == "01"
    assert card["valid_to"] == "2024-01-01"
    assert idcard.encode_text(card) == raw


def test_i_hand_built_vector():
    raw = layout(
        ("SMITH, JOHN", 120),
        ("2", 2),
        ("USA110085070151", 30),
        ("USA", 6),
        ("史密斯", 30),
        ("20180501", 16),
        ("20280501", 16),
        ("19850701", 16),
        ("10", 4),
        ("1100", 8),
        ("I", 2),
        ("", 6),
    )
    card = idcard.decode_text(raw)
    assert card["card_type"] == "I"
    assert card["english_name"] == "SMITH, JOHN"
    assert card["chinese_name"] == "史密斯"
    assert card["name"] == "史密斯"
    assert card["sex"] == "2" and card["sex_text"] == "女"
    assert card["permit_number"] == card["id_number"] == "USA110085070151"
    assert card["id_checksum_ok"] is None
    assert card["nationality"] == "USA"
    assert card["birth"] == "1985-07-01"
    assert card["valid_from"] == "2018-05-01" and card["valid_to"] == "2028-05-01"
    assert card["card_version"] == "10" and card["issuing_office"] == "1100"
    assert card["address"] == "" and card["authority"] == ""
    assert idcard.encode_text(card) == raw


def test_i_without_chinese_name_uses_english_name():
    card = dict(SAMPLE_CARDS["foreigner_i"], chinese_name="")
    assert idcard.decode_text(idcard.encode_text(card))["name"] == "SMITH, JOHN"


def test_y_hand_built_vector():
    english = "MARTIN, ALEXANDER JAMES CHRISTOPHER WILLIAMSON"  # 46 chars, space at 36
    assert len(english) == 46 and english[35] == " "
    raw = layout(
        ("马丁", 30),
        ("1", 2),
        ("02", 4),
        ("19800102", 16),
        (english[:35], 70),
        (Y_ID, 36),
        ("", 30),
        ("20231201", 16),
        ("20331201", 16),
        (english[35:], 22),
        ("GBR", 6),
        ("Y", 2),
        ("A1", 6),
    )
    card = idcard.decode_text(raw)
    assert card["card_type"] == "Y"
    assert card["name"] == "马丁"
    assert card["english_name"] == english
    assert card["renewal_count"] == "02"
    assert card["nationality"] == "GBR"
    assert card["previous_permit_link"] == "A1"
    assert card["id_number"] == Y_ID and card["id_checksum_ok"] is True
    assert idcard.encode_text(card) == raw


def test_y_short_english_name():
    card = dict(SAMPLE_CARDS["foreigner_y"], english_name="LI, AMY")
    assert idcard.decode_text(idcard.encode_text(card))["english_name"] == "LI, AMY"


@pytest.mark.parametrize("name", sorted(SAMPLE_CARDS))
def test_sample_cards_round_trip(name):
    text = idcard.encode_text(SAMPLE_CARDS[name])
    assert len(text) == 256
    card = idcard.decode_text(text)
    assert card["card_type"] == SAMPLE_CARDS[name]["card_type"]
    assert idcard.decode_text(idcard.encode_text(card)) == card
    assert idcard.encode_text(card) == text
    for key, value in SAMPLE_CARDS[name].items():
        assert card[key] == value


TEXTISH = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0xFFFF, exclude_categories=["Cs"]),
    max_size=15,
)


@settings(max_examples=100, deadline=None)
@given(name=TEXTISH, address=st.text(max_size=35).map(lambda s: s.strip(" \x00")))
def test_resident_round_trip_property(name, address):
    card = dict(SAMPLE_CARDS["resident"], name=name.strip(" \x00"), address=address)
    try:
        text = idcard.encode_text(card)
    except ValueError:
        return  # characters above U+FFFF took two units each and overflowed the field
    decoded = idcard.decode_text(text)
    assert decoded["name"] == card["name"]
    assert decoded["address"] == card["address"]
    assert idcard.encode_text(decoded) == text


def test_text_errors():
    with pytest.raises(TextDecodeError):
        idcard.decode_text(bytes(255))
    raw = bytearray(resident_raw())
    raw[0:2] = b"\x00\xd8"  # lone high surrogate
    with pytest.raises(TextDecodeError):
        idcard.decode_text(bytes(raw))
    raw[0:2] = b"\x00\xdc"  # lone low surrogate
    with pytest.raises(TextDecodeError):
        idcard.decode_text(bytes(raw))
    raw[0:4] = "𠀀".encode("utf-16-le")  # a surrogate pair is joined
    assert idcard.decode_text(bytes(raw))["name"].startswith("𠀀")
    with pytest.raises(ValueError):
        idcard.encode_text(dict(SAMPLE_CARDS["resident"], name="x" * 16))
    with pytest.raises(ValueError):
        idcard.encode_text({"card_type": "Q"})


def test_encode_accepts_missing_and_non_string_values():
    card = idcard.decode_text(idcard.encode_text({"card_type": "J", "issue_count": 3}))
    assert card["issue_count"] == "3"
    assert card["name"] == "" and card["id_checksum_ok"] is False


def test_address_block():
    block = idcard.encode_address("北京市海淀区")
    assert len(block) == 70
    assert idcard.decode_address(block) == "北京市海淀区"
    with pytest.raises(TextDecodeError):
        idcard.decode_address(block[:-2])


# ------------------------------------------------------------------ GB 11643


@pytest.mark.parametrize("number", ["11010519491231002X", "440524188001010014"])
def test_standard_examples_are_valid(number):
    assert check_char(number[:17]) == number[17]
    assert idcard.gb11643_check_char(number[:17]) == number[17]
    assert idcard.id_checksum_ok(number)


def test_lowercase_x_is_accepted():
    assert idcard.id_checksum_ok("11010519491231002x")


@settings(max_examples=200)
@given(st.text(alphabet="0123456789", min_size=17, max_size=17))
def test_check_char_matches_the_independent_formula(first17):
    assert idcard.gb11643_check_char(first17) == check_char(first17)
    number = first17 + check_char(first17)
    assert idcard.id_checksum_ok(number)
    wrong = "0" if number[17] != "0" else "1"
    assert not idcard.id_checksum_ok(first17 + wrong)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "1101051949123100",
        "11010519491231002",
        "11010519491231002XX",
        "1101051949123100AX",
        "11010519491231002Y",
        "１１０１０５１９４９１２３１００２X",  # full-width digits
        None,
        11010519491231002,
    ],
)
def test_bad_ids_are_false_not_exceptions(bad):
    assert idcard.id_checksum_ok(bad) is False


def test_check_char_rejects_bad_input():
    with pytest.raises(ValueError):
        idcard.gb11643_check_char("123")
    with pytest.raises(ValueError):
        idcard.gb11643_check_char("1101051949123100A")


def test_make_id_number():
    number = idcard.make_id_number("110105", "19491231", "002")
    assert number == "11010519491231002X"
    assert idcard.id_checksum_ok(idcard.make_id_number("440524", "18800101", "001"))
    with pytest.raises(ValueError):
        idcard.make_id_number("11010", "19491231", "002")
    with pytest.raises(ValueError):
        idcard.make_id_number("11010A", "19491231", "002")


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("110101199003071234", "1101**********1234"),
        ("11010519491231002X", "1101**********002X"),
        ("USA110085070151", "USA1*******0151"),
        ("123456789", "1234*6789"),
        ("12345678", "********"),
        ("123", "***"),
        ("", ""),
        (None, ""),
    ],
)
def test_mask_id(number, masked):
    assert idcard.mask_id(number) == masked
    if number:
        assert len(idcard.mask_id(number)) == len(number)
