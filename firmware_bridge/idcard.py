"""The 256-byte card text: decode and encode, plus GB 11643 ID numbers and masking.

Runs unchanged under MicroPython and CPython. The text is UCS-2 little-endian (two bytes per
character, low byte first), every field right-padded with U+0020. Offsets below are byte
offsets; a field of N bytes holds N / 2 characters.

Card kinds, chosen by the flag character at byte 248 (UCS-2 char 124): 'J' residence permit
for HK/Macau/Taiwan residents, 'I' foreigner permanent residence card (2017), 'Y' foreigner
permanent residence card (2023), anything else a resident ID card.

``decode_text`` returns a plain dict. Every kind has the common keys::

    card_type ('resident' | 'J' | 'I' | 'Y'), name, sex ('0' | '1' | '2' | '9' | raw),
    sex_text, nation, nation_text, birth, address, id_number, id_checksum_ok (True/False,
    None for 'I'), authority, valid_from, valid_to

(keys a kind has no field for are ''), plus per kind:
    J: pass_number, issue_count
    I: english_name, nationality, chinese_name, card_version, issuing_office, permit_number
       (name = chinese_name, or english_name when there is no Chinese name;
       id_number = permit_number)
    Y: english_name, nationality, renewal_count, previous_permit_link

Dates (birth, valid_from, valid_to) are ISO 'YYYY-MM-DD' when the card holds a real
YYYYMMDD date; otherwise the raw stripped characters are kept (e.g. '长期' for a long-term
card, or whatever a damaged card holds) so that nothing is lost and nothing crashes.
``encode_text`` is the inverse (ISO dates are written back as YYYYMMDD); for any dict that
``decode_text`` returned, ``decode_text(encode_text(d)) == d``.
"""

from .errors import TextDecodeError

TEXT_SIZE = 256
FLAG_OFFSET = 248

SEX_TEXT = {"0": "未知", "1": "男", "2": "女", "9": "未说明"}

# GB/T 3304 ethnic-group codes.
NATION_TEXT = {
    "01": "汉",
    "02": "蒙古",
    "03": "回",
    "04": "藏",
    "05": "维吾尔",
    "06": "苗",
    "07": "彝",
    "08": "壮",
    "09": "布依",
    "10": "朝鲜",
    "11": "满",
    "12": "侗",
    "13": "瑶",
    "14": "白",
    "15": "土家",
    "16": "哈尼",
    "17": "哈萨克",
    "18": "傣",
    "19": "黎",
    "20": "傈僳",
    "21": "佤",
    "22": "畲",
    "23": "高山",
    "24": "拉祜",
    "25": "水",
    "26": "东乡",
    "27": "纳西",
    "28": "景颇",
    "29": "柯尔克孜",
    "30": "土",
    "31": "达斡尔",
    "32": "仫佬",
    "33": "羌",
    "34": "布朗",
    "35": "撒拉",
    "36": "毛南",
    "37": "仡佬",
    "38": "锡伯",
    "39": "阿昌",
    "40": "普米",
    "41": "塔吉克",
    "42": "怒",
    "43": "乌孜别克",
    "44": "俄罗斯",
    "45": "鄂温克",
    "46": "德昂",
    "47": "保安",
    "48": "裕固",
    "49": "京",
    "50": "塔塔尔",
    "51": "独龙",
    "52": "鄂伦春",
    "53": "赫哲",
    "54": "门巴",
    "55": "珞巴",
    "56": "基诺",
    "97": "其他",
    "98": "外国血统中国籍人士",
}

LONG_TERM = "长期"

# Field layouts: (key, byte offset, byte size). The flag at 248 (2 bytes) is written apart.
_RESIDENT = (
    ("name", 0, 30),
    ("sex", 30, 2),
    ("nation", 32, 4),
    ("birth", 36, 16),
    ("address", 52, 70),
    ("id_number", 122, 36),
    ("authority", 158, 30),
    ("valid_from", 188, 16),
    ("valid_to", 204, 16),
)
# J: as resident, 32 (4) blank, 220 pass number (18), 238 issue count (4), 248 'J'.
_J = (
    ("name", 0, 30),
    ("sex", 30, 2),
    ("birth", 36, 16),
    ("address", 52, 70),
    ("id_number", 122, 36),
    ("authority", 158, 30),
    ("valid_from", 188, 16),
    ("valid_to", 204, 16),
    ("pass_number", 220, 18),
    ("issue_count", 238, 4),
)
# I (2017): 0 English name (120), 120 sex, 122 permit number (30), 152 nationality (6),
# 158 Chinese name (30), 188 issued, 204 expires, 220 birth, 236 version (4), 240 office (8).
_I = (
    ("english_name", 0, 120),
    ("sex", 120, 2),
    ("permit_number", 122, 30),
    ("nationality", 152, 6),
    ("chinese_name", 158, 30),
    ("valid_from", 188, 16),
    ("valid_to", 204, 16),
    ("birth", 220, 16),
    ("card_version", 236, 4),
    ("issuing_office", 240, 8),
)
# Y (2023, layout UNCERTAIN): 0 Chinese name, 30 sex, 32 renewal count (4), 36 birth,
# 52 English name chars 1-35 (70), 122 card number (36), 188 issued, 204 expires,
# 220 English name chars 36-46 (22), 242 nationality (6), 250 previous permit link (6).
_Y = (
    ("name", 0, 30),
    ("sex", 30, 2),
    ("renewal_count", 32, 4),
    ("birth", 36, 16),
    ("id_number", 122, 36),
    ("valid_from", 188, 16),
    ("valid_to", 204, 16),
    ("nationality", 242, 6),
    ("previous_permit_link", 250, 6),
)
_Y_NAME1 = (52, 70)  # 35 characters
_Y_NAME2 = (220, 22)  # 11 characters

_DATE_KEYS = ("birth", "valid_from", "valid_to")
_COMMON = (
    "name",
    "sex",
    "sex_text",
    "nation",
    "nation_text",
    "birth",
    "address",
    "id_number",
    "id_checksum_ok",
    "authority",
    "valid_from",
    "valid_to",
)
_PAD = " \x00"


# ---------------------------------------------------------------- UCS-2 helpers


def _get(text, off, size):
    """Raw characters of one field: UCS-2 LE pairs, surrogate pairs joined."""
    chars = []
    i = off
    end = off + size
    while i < end:
        u = text[i] | (text[i + 1] << 8)
        i += 2
        if 0xD800 <= u <= 0xDBFF:
            if i < end:
                v = text[i] | (text[i + 1] << 8)
                if 0xDC00 <= v <= 0xDFFF:
                    i += 2
                    chars.append(chr(0x10000 + ((u - 0xD800) << 10) + (v - 0xDC00)))
                    continue
            raise TextDecodeError(f"unpaired surrogate at byte {i - 2}", text)
        if 0xDC00 <= u <= 0xDFFF:
            raise TextDecodeError(f"unpaired surrogate at byte {i - 2}", text)
        chars.append(chr(u))
    return "".join(chars)


def _field(text, off, size):
    return _get(text, off, size).strip(_PAD)


def _units(s):
    """UCS-2 code units of ``s`` (characters above U+FFFF become surrogate pairs)."""
    out = []
    for ch in s:
        c = ord(ch)
        if c > 0xFFFF:
            c -= 0x10000
            out.append(0xD800 + (c >> 10))
            out.append(0xDC00 + (c & 0x3FF))
        else:
            out.append(c)
    return out


def _put(buf, off, size, value, key):
    units = _units(value)
    if len(units) * 2 > size:
        raise ValueError(f"{key}: {len(units)} characters do not fit {size} bytes")
    i = off
    for u in units:
        buf[i] = u & 0xFF
        buf[i + 1] = u >> 8
        i += 2


# ---------------------------------------------------------------- dates

_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _is_digits(s):
    if not s:
        return False
    return all("0" <= ch <= "9" for ch in s)


def _iso_date(raw):
    """'YYYYMMDD' -> 'YYYY-MM-DD' when it is a real date; anything else is kept as it is."""
    if len(raw) != 8 or not _is_digits(raw):
        return raw
    year = int(raw[0:4])
    month = int(raw[4:6])
    day = int(raw[6:8])
    if month < 1 or month > 12 or day < 1 or day > _MONTH_DAYS[month - 1]:
        return raw
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if month == 2 and day == 29 and not leap:
        return raw
    return raw[0:4] + "-" + raw[4:6] + "-" + raw[6:8]


def _card_date(value):
    """Inverse of ``_iso_date``: ISO 'YYYY-MM-DD' back to the card's 'YYYYMMDD'."""
    if len(value) == 10 and value[4] == "-" and value[7] == "-":
        raw = value[0:4] + value[5:7] + value[8:10]
        if _iso_date(raw) == value:
            return raw
    return value


# ---------------------------------------------------------------- decode / encode


def card_type_of(text):
    """Card kind from the flag at byte 248: 'J', 'I', 'Y' or 'resident'."""
    if len(text) != TEXT_SIZE:
        raise TextDecodeError(f"card text is {len(text)} bytes, expected 256")
    if text[FLAG_OFFSET + 1] == 0:
        flag = chr(text[FLAG_OFFSET])
        if flag == "J" or flag == "I" or flag == "Y":
            return flag
    return "resident"


def decode_text(text):
    """Decode the 256-byte card text into the dict described in the module docstring.

    Raises ``TextDecodeError`` when the text is not 256 bytes or holds a broken surrogate.
    """
    kind = card_type_of(text)
    card = {}
    for key in _COMMON:
        card[key] = ""
    card["card_type"] = kind
    if kind == "J":
        layout = _J
    elif kind == "I":
        layout = _I
    elif kind == "Y":
        layout = _Y
    else:
        layout = _RESIDENT
    for key, off, size in layout:
        card[key] = _field(text, off, size)
    if kind == "Y":
        # English name: chars 1-35 at 52 and chars 36-46 at 220, joined before stripping so
        # that a space falling exactly at char 35 or 36 is kept.
        joined = _get(text, _Y_NAME1[0], _Y_NAME1[1]) + _get(text, _Y_NAME2[0], _Y_NAME2[1])
        card["english_name"] = joined.strip(_PAD)
    if kind == "I":
        card["id_number"] = card["permit_number"]
        card["name"] = card["chinese_name"] or card["english_name"]
        card["id_checksum_ok"] = None
    else:
        card["id_checksum_ok"] = id_checksum_ok(card["id_number"])
    for key in _DATE_KEYS:
        card[key] = _iso_date(card[key])
    card["sex_text"] = SEX_TEXT.get(card["sex"], "未知")
    card["nation_text"] = NATION_TEXT.get(card["nation"], "")
    return card


def encode_text(card):
    """Build the 256-byte card text from a card dict (inverse of ``decode_text``).

    Missing keys are written as blanks; derived keys (sex_text, nation_text,
    id_checksum_ok, and for 'I' cards name and id_number) are ignored. Raises ``ValueError``
    when a value does not fit its field.
    """
    kind = card.get("card_type", "resident")
    if kind == "J":
        layout = _J
    elif kind == "I":
        layout = _I
    elif kind == "Y":
        layout = _Y
    elif kind == "resident":
        layout = _RESIDENT
    else:
        raise ValueError(f"unknown card_type {kind!r}")
    buf = bytearray(TEXT_SIZE)
    for i in range(0, TEXT_SIZE, 2):
        buf[i] = 0x20  # U+0020 padding: 20 00
    for key, off, size in layout:
        value = card.get(key)
        value = "" if value is None else str(value)
        if key in _DATE_KEYS:
            value = _card_date(value)
        _put(buf, off, size, value, key)
    if kind == "Y":
        name = card.get("english_name") or ""
        units = _units(name)
        if len(units) > 46:
            raise ValueError(f"english_name: {len(units)} characters do not fit 46")
        _put(buf, _Y_NAME1[0], _Y_NAME1[1], name[:35], "english_name")
        _put(buf, _Y_NAME2[0], _Y_NAME2[1], name[35:], "english_name")
    if kind != "resident":
        buf[FLAG_OFFSET] = ord(kind)
        buf[FLAG_OFFSET + 1] = 0
    return bytes(buf)


def decode_address(data):
    """The latest appended address (read 30 03 reply, 70 bytes UCS-2 LE), stripped."""
    if len(data) != 70:
        raise TextDecodeError(f"address is {len(data)} bytes, expected 70")
    return _field(data, 0, 70)


def encode_address(address):
    """70-byte UCS-2 LE address block for a read 30 03 reply."""
    buf = bytearray(70)
    for i in range(0, 70, 2):
        buf[i] = 0x20
    _put(buf, 0, 70, address, "address")
    return bytes(buf)


# ---------------------------------------------------------------- GB 11643 ID numbers

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"


def gb11643_check_char(first17):
    """Check character of an 18-character ID number (ISO 7064 MOD 11-2).

    Raises ``ValueError`` unless ``first17`` is 17 ASCII digits.
    """
    if not isinstance(first17, str) or len(first17) != 17 or not _is_digits(first17):
        raise ValueError("need 17 digits")
    total = 0
    for i in range(17):
        total += (ord(first17[i]) - 48) * _WEIGHTS[i]
    return _CHECK_CHARS[total % 11]


def id_checksum_ok(id18):
    """True when ``id18`` is 17 digits plus the right check character ('X' or 'x' for 10).

    Anything else (wrong length, non-digits, not a string) is False, never an exception.
    """
    if not isinstance(id18, str) or len(id18) != 18 or not _is_digits(id18[:17]):
        return False
    last = id18[17]
    if last == "x":
        last = "X"
    return gb11643_check_char(id18[:17]) == last


def make_id_number(area6, birth8, seq3):
    """A valid 18-character ID number from area code, YYYYMMDD and sequence (odd = male)."""
    first17 = str(area6) + str(birth8) + str(seq3)
    if len(str(area6)) != 6 or len(str(birth8)) != 8 or len(str(seq3)) != 3:
        raise ValueError("need 6 + 8 + 3 digits")
    return first17 + gb11643_check_char(first17)


def mask_id(id_number):
    """Mask for logs and the journal: first 4 + '*' + last 4, same length.

    ``110101199003071234`` -> ``1101**********1234``; 8 characters or fewer are fully starred.
    """
    if not id_number:
        return ""
    n = len(id_number)
    if n <= 8:
        return "*" * n
    return id_number[:4] + "*" * (n - 8) + id_number[-4:]
