"""A simulated SAM module: the reader's state machine without any I/O.

Runs unchanged under MicroPython and CPython. The transport (pty, socket, UART, timing of the
bytes on the wire) is the caller's; this module only turns command frames into reply frames,
exactly as the real module would, and records what it did (``history``) so tests can assert
on it, like gpiozero's mock pins.

Card presence follows the real reader: ``find`` succeeds (SW3 9F) while a card is in the
field and has not been read in this presence; after a successful read it fails (SW3 80)
until the card is removed and placed again: one tap, one read.
"""

from . import sam
from .errors import ChecksumError, LengthError
from .idcard import LONG_TERM, _card_date, encode_address, encode_text, make_id_number

# Demo cards for ``kiosk demo`` and tests; id numbers are valid GB 11643 numbers.
SAMPLE_CARDS = {
    "resident": {
        "card_type": "resident",
        "name": "张三",
        "sex": "1",
        "nation": "01",
        "birth": "1990-03-07",
        "address": "北京市东城区景山前街4号",
        "id_number": make_id_number("110101", "19900307", "123"),
        "authority": "北京市公安局东城分局",
        "valid_from": "2015-06-01",
        "valid_to": "2035-06-01",
    },
    "long_term": {
        "card_type": "resident",
        "name": "李四",
        "sex": "2",
        "nation": "03",
        "birth": "1950-12-31",
        "address": "宁夏回族自治区银川市兴庆区解放西街1号",
        "id_number": make_id_number("640104", "19501231", "042"),
        "authority": "银川市公安局兴庆分局",
        "valid_from": "2010-01-01",
        "valid_to": "长期",
    },
    "permit_j": {
        "card_type": "J",
        "name": "陈大文",
        "sex": "1",
        "birth": "1985-07-01",
        "address": "广东省深圳市福田区福华路1号",
        "id_number": make_id_number("810000", "19850701", "015"),
        "authority": "深圳市公安局",
        "valid_from": "2019-01-01",
        "valid_to": "2024-01-01",
        "pass_number": "H12345678",
        "issue_count": "01",
    },
    "foreigner_i": {
        "card_type": "I",
        "english_name": "SMITH, JOHN",
        "sex": "1",
        "permit_number": "USA110085070151",
        "nationality": "USA",
        "chinese_name": "史密斯",
        "valid_from": "2018-05-01",
        "valid_to": "2028-05-01",
        "birth": "1985-07-01",
        "card_version": "10",
        "issuing_office": "1100",
    },
    "foreigner_y": {
        "card_type": "Y",
        "name": "马丁",
        "sex": "1",
        "renewal_count": "00",
        "birth": "1980-01-02",
        "english_name": "MARTIN, ALEXANDER JAMES CHRISTOPHER WILLIAMSON",
        "id_number": make_id_number("911156", "19800102", "001"),
        "valid_from": "2023-12-01",
        "valid_to": "2033-12-01",
        "nationality": "GBR",
        "previous_permit_link": "",
    },
}


# What a cards file (``kiosk reader simulate --cards``) may say about a card, per card_type:
# the fields the card's text stores (idcard's layouts, in their order).
CARD_FIELDS = {
    "resident": (
        "name", "sex", "nation", "birth", "address", "id_number", "authority",
        "valid_from", "valid_to",
    ),
    "J": (
        "name", "sex", "birth", "address", "id_number", "authority", "valid_from",
        "valid_to", "pass_number", "issue_count",
    ),
    "I": (
        "english_name", "sex", "permit_number", "nationality", "chinese_name", "valid_from",
        "valid_to", "birth", "card_version", "issuing_office",
    ),
    "Y": (
        "name", "sex", "renewal_count", "birth", "english_name", "id_number", "valid_from",
        "valid_to", "nationality", "previous_permit_link",
    ),
}  # fmt: skip
# What ``kiosk reader decode`` prints besides the stored fields: accepted and ignored, so a
# card it printed can be served again. Common keys a kind has no field for must be empty.
DECODED_ONLY = ("sex_text", "nation_text", "id_checksum_ok", "photo_bytes", "finger_bytes")
COMMON_FIELDS = (
    "name", "sex", "nation", "birth", "address", "id_number", "authority", "valid_from",
    "valid_to",
)  # fmt: skip
# Dates a card stores as YYYYMMDD, written YYYY-MM-DD in a cards file (as decode prints them).
DATE_FIELDS = ("birth", "valid_from", "valid_to")
# What only the simulator reads: the answer to "read new address", and the chip serial.
SIMULATOR_FIELDS = ("new_address", "chip_serial")


def card_problems(card):
    """What is wrong with a card object of a cards file: a list of (field, reason), empty
    when the card can be served. Unknown (misspelled) fields are problems, so a typo is not
    silently served as a blank field."""
    if not isinstance(card, dict):
        return [("", "must be an object")]
    kind = card.get("card_type", "resident")
    if kind not in CARD_FIELDS:
        return [("card_type", f"must be one of resident, J, I, Y, not {kind!r}")]
    stored = CARD_FIELDS[kind]
    problems = []
    for key in sorted(card):
        value = card[key]
        if key == "card_type" or key in DECODED_ONLY:
            continue
        if key in stored or key == "new_address":
            if not isinstance(value, str):
                problems.append((key, "must be text"))
            elif key in DATE_FIELDS and not _is_card_date(key, value):
                also = " or " + LONG_TERM if key == "valid_to" else ""
                problems.append((key, f"must be a date YYYY-MM-DD{also}, not {value!r}"))
        elif key == "chip_serial":
            if not _is_serial(value):
                problems.append((key, "must be a list of 8 numbers 0-255"))
        elif key in COMMON_FIELDS:
            if value not in ("", None) and not _derived(card, kind, key):
                problems.append((key, f"card_type {kind} has no {key}"))
        else:
            problems.append((key, "unknown field"))
    if not problems:
        try:
            encode_text(card)
        except ValueError as exc:
            problems.append(("", str(exc)))
    return problems


def _is_card_date(key, value):
    """A real date as YYYY-MM-DD (the card stores YYYYMMDD), or blank like a missing field;
    a long-term card's valid_to is 长期."""
    if value == "" or (key == "valid_to" and value == LONG_TERM):
        return True
    return _card_date(value) != value  # converted: it was a well-formed, real date


def _is_serial(value):
    return (
        isinstance(value, list)
        and len(value) == 8
        and all(isinstance(b, int) and 0 <= b <= 255 for b in value)
    )


def _derived(card, kind, key):
    """An I card's name and id_number are derived (as decode prints them): same value only."""
    if kind != "I":
        return False
    if key == "id_number":
        return card[key] == card.get("permit_number")
    return key == "name" and card[key] in (card.get("chinese_name"), card.get("english_name"))


def _le32(n):
    return bytes((n & 0xFF, (n >> 8) & 0xFF, (n >> 16) & 0xFF, (n >> 24) & 0xFF))


# SAM id reply: b0 b1 b2 b3, then three little-endian uint32: "05.01-20230101-...".
_SAM_ID = bytes((5, 0, 1, 0)) + _le32(20230101) + _le32(1234567) + _le32(3010214576)


def _filler(size, seed):
    """Opaque stand-in for WLT photo / fingerprint bytes; never contains the preamble."""
    out = bytearray(size)
    x = seed & 0xFF
    for i in range(size):
        x = (x * 5 + 17) & 0x7F  # 7-bit values: the preamble needs AA and 96
        out[i] = x
    return bytes(out)


PHOTO_FILLER = _filler(sam.PHOTO_SIZE, 0x57)
FINGER_FILLER = _filler(sam.FINGER_SIZE, 0x43)


def chip_serial(card):
    """Deterministic 8-byte chip serial for a card (``card['chip_serial']`` if given)."""
    given = card.get("chip_serial")
    if given:
        return bytes(given)
    h1 = 0x811C9DC5
    h2 = 0x01000193
    for ch in card.get("id_number", "") + card.get("name", ""):
        c = ord(ch)
        h1 = ((h1 ^ (c & 0xFF)) * 0x01000193) & 0xFFFFFFFF
        h2 = ((h2 ^ (c >> 8)) * 0x01000193 + c) & 0xFFFFFFFF
    return bytes((h1 >> 24, (h1 >> 16) & 0xFF, (h1 >> 8) & 0xFF, h1 & 0xFF)) + bytes(
        (h2 >> 24, (h2 >> 16) & 0xFF, (h2 >> 8) & 0xFF, h2 & 0xFF)
    )


class SimulatedSam:
    """The SAM module's reply logic, driven by ``handle()`` or ``feed()``.

    ``cards`` is a catalogue name -> card dict (default ``SAMPLE_CARDS``) so ``place()`` can
    take a name; a card dict is the one ``idcard.decode_text`` returns (at least card_type
    and the fields of its kind), optionally with ``new_address`` (answer to read 30 03) and
    ``chip_serial`` (8 bytes).

    Fault knobs (plain attributes, each consumed by the next reply it affects):
    ``corrupt_next`` flips the next reply's checksum byte; ``fail_read_next`` answers the next
    read (30 01 / 30 10) with SW3 41 and leaves the card unread; ``self_test_failed``
    (sticky) answers status 11 FF with SW3 60; ``mute_next`` drops the next reply.
    """

    def __init__(self, cards=None):
        self.cards = SAMPLE_CARDS if cards is None else cards
        self.card = None  # card dict in the field, or None
        self.found = False  # find succeeded in this presence
        self.selected = False  # select succeeded in this presence
        self.read_done = False  # a base read succeeded in this presence: no more finds
        self.baud = 115200
        self.rf_bytes = 80
        self.corrupt_next = False
        self.fail_read_next = False
        self.self_test_failed = False
        self.mute_next = False
        self.history = []  # (cmd, para, sw3) per command handled; sw3 None when no reply
        self._parser = sam.CommandParser()

    # ------------------------------------------------------------ card field

    def place(self, card):
        """Put a card (dict, or a name in ``cards``) on the reader: a new presence."""
        if isinstance(card, str):
            card = self.cards[card]
        encode_text(card)  # fail here, not in the middle of a read
        self.card = card
        self.found = False
        self.selected = False
        self.read_done = False

    def remove(self):
        """Take the card away; the next placement is a new tap."""
        self.card = None
        self.found = False
        self.selected = False
        self.read_done = False

    @property
    def present(self):
        """True while a card is in the field."""
        return self.card is not None

    # ------------------------------------------------------------ frames

    def feed(self, data):
        """Stream interface: bytes from the host in any chunking -> concatenated replies.

        Garbage and incomplete frames get no reply (like the module); a frame with a bad
        checksum gets SW3 10, a bad LEN SW3 11.
        """
        out = bytearray()
        for item in self._parser.feed(data):
            reply = self._item(item)
            if reply:
                out.extend(reply)
        return bytes(out)

    def handle(self, frame):
        """One complete command frame -> reply frame bytes, or None when there is no reply.

        Bytes that do not start with the preamble get no reply; a LEN that is out of bounds
        or disagrees with the frame size gets SW3 11; a bad checksum SW3 10.
        """
        frame = bytes(frame)
        if len(frame) < 5 or frame[0:5] != sam.PREAMBLE:
            return None
        if len(frame) < sam.HEADER_SIZE + sam.MIN_COMMAND_LEN or len(frame) > sam.MAX_FRAME:
            return self._reply(None, sam.SW3_BAD_LENGTH)
        length = (frame[5] << 8) | frame[6]
        if length < sam.MIN_COMMAND_LEN or sam.HEADER_SIZE + length != len(frame):
            return self._reply(None, sam.SW3_BAD_LENGTH)
        try:
            command = sam.parse_command(frame)
        except ChecksumError:
            return self._reply(None, sam.SW3_BAD_CHECKSUM)
        except LengthError:
            return self._reply(None, sam.SW3_BAD_LENGTH)
        return self._command(command)

    def _item(self, item):
        if isinstance(item, ChecksumError):
            return self._reply(None, sam.SW3_BAD_CHECKSUM)
        if isinstance(item, LengthError):
            return self._reply(None, sam.SW3_BAD_LENGTH)
        if isinstance(item, sam.Command):
            return self._command(item)
        return None  # garbage: the module stays silent

    def _reply(self, command, sw3, data=b""):
        cmd = command.cmd if command is not None else None
        para = command.para if command is not None else None
        if self.mute_next:
            self.mute_next = False
            self.history.append((cmd, para, None))
            return None
        self.history.append((cmd, para, sw3))
        out = sam.build_response(0, 0, sw3, data)
        if self.corrupt_next:
            self.corrupt_next = False
            out = out[:-1] + bytes((out[-1] ^ 0xFF,))
        return out

    def _command(self, c):
        cmd = c.cmd
        para = c.para
        nd = len(c.data)
        if cmd == sam.CMD_RESET and para == sam.PARA_ANY and nd == 0:
            self.found = False
            self.selected = False
            return self._reply(c, sam.SW3_OK)
        if cmd == sam.CMD_STATUS and para == sam.PARA_ANY and nd == 0:
            if self.self_test_failed:
                return self._reply(c, sam.SW3_SELF_TEST_FAILED)
            return self._reply(c, sam.SW3_OK)
        if cmd == sam.CMD_SAM_ID and para == sam.PARA_ANY and nd == 0:
            return self._reply(c, sam.SW3_OK, _SAM_ID)
        if cmd == sam.CMD_CARD and para == sam.PARA_FIND and nd == 0:
            return self._find(c)
        if cmd == sam.CMD_CARD and para == sam.PARA_SELECT and nd == 0:
            return self._select(c)
        if cmd == sam.CMD_READ and nd == 0:
            if para == sam.PARA_READ_BASE or para == sam.PARA_READ_FINGER:
                return self._read(c, para == sam.PARA_READ_FINGER)
            if para == sam.PARA_READ_ADDRESS:
                return self._read_address(c)
        if cmd == sam.CMD_SET_BAUD and nd == 0:
            for baud, code in sam.BAUD_CODES.items():
                if code == para:
                    self.baud = baud
                    return self._reply(c, sam.SW3_OK)
        rf_ok = nd == 1 and sam.RF_BYTES_MIN <= c.data[0] <= sam.RF_BYTES_MAX
        if cmd == sam.CMD_SET_RF and para == sam.PARA_ANY and rf_ok:
            self.rf_bytes = c.data[0]
            return self._reply(c, sam.SW3_OK)
        return self._reply(c, sam.SW3_BAD_COMMAND)

    def _find(self, c):
        if self.card is None or self.read_done:
            self.found = False
            return self._reply(c, sam.SW3_NO_CARD)
        self.found = True
        return self._reply(c, sam.SW3_FOUND, bytes(4))

    def _select(self, c):
        if self.card is None or not self.found or self.read_done:
            return self._reply(c, sam.SW3_SELECT_FAILED)
        self.selected = True
        return self._reply(c, sam.SW3_OK, chip_serial(self.card))

    def _read(self, c, finger):
        if self.card is None or not self.selected:
            return self._reply(c, sam.SW3_READ_FAILED)
        if self.fail_read_next:
            self.fail_read_next = False
            return self._reply(c, sam.SW3_READ_FAILED)
        text = encode_text(self.card)
        data = sam.read_base_data(text, PHOTO_FILLER, FINGER_FILLER if finger else None)
        self.read_done = True
        return self._reply(c, sam.SW3_OK, data)

    def _read_address(self, c):
        if self.card is None or not self.selected:
            return self._reply(c, sam.SW3_READ_FAILED)
        address = self.card.get("new_address")
        if not address:
            return self._reply(c, sam.SW3_EMPTY)
        return self._reply(c, sam.SW3_OK, encode_address(address))
