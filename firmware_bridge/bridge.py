"""MCU <-> Pi bridge protocol (version 1): COBS + CRC-16 frames, message types, payloads.

Runs unchanged under MicroPython (on the MCU) and CPython (on the Pi); ``docs/bridge.md`` is
the specification. Wire format::

    on the wire:  COBS(packet) 00
    packet:       VER(1) TYPE(1) SEQ(2, BE) PAYLOAD(0..506) CRC(2, BE)
                  header 4 + payload + CRC 2 = 6 + len(PAYLOAD) <= MAX_PACKET (512)
    CRC:          CRC-16/CCITT-FALSE (poly 1021, init FFFF, no reflection, xorout 0)
                  over VER .. last PAYLOAD byte; CRC("123456789") = 0x29B1
    COBS:         one overhead byte per started 254-byte block: 512 -> at most 515 bytes,
                  never a 00 inside, so 00 only ends a frame (resynchronisation point)

``Decoder.feed`` never raises for bad input: it returns ``Message`` items and ``BridgeError``
instances (not raised), in stream order, and its receive buffer is preallocated.
"""

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


from .errors import ProtocolError
from .jsonenc import dumps

VERSION = const(1)
HEADER_SIZE = const(4)  # VER TYPE SEQ_HI SEQ_LO
CRC_SIZE = const(2)
MIN_PACKET = const(6)  # header 4 + CRC 2, empty payload
MAX_PACKET = const(512)
MAX_PAYLOAD = const(506)  # 512 - 4 - 2
MAX_ENCODED = const(515)  # 512 + ceil(512 / 254) = 512 + 3 COBS overhead bytes

# Message types
HELLO = const(0x01)  # MCU -> Pi: reset_cause(1) version(UTF-8)
PING = const(0x02)  # Pi -> MCU: token(4)
PONG = const(0x03)  # MCU -> Pi: token(4) uptime_ms(4, BE) version(UTF-8)
CARD = const(0x10)  # MCU -> Pi: compact sorted JSON of the card text + cycle_ms
CARD_ERROR = const(0x11)  # MCU -> Pi: stage(1) sw3(1) detail(UTF-8)
RELAY = const(0x20)  # Pi -> MCU: open_ms(2, BE)
INDICATE = const(0x21)  # Pi -> MCU: green(1) red(1) buzzer_ms(2, BE) show_ms(2, BE)
LOG = const(0x30)  # MCU -> Pi: level(1) text(UTF-8)
HEALTH = const(0x31)  # MCU -> Pi: compact sorted JSON
ACK = const(0x7F)  # both: acked_seq(2, BE) status(1) data

TYPE_NAMES = {
    0x01: "HELLO",
    0x02: "PING",
    0x03: "PONG",
    0x10: "CARD",
    0x11: "CARD_ERROR",
    0x20: "RELAY",
    0x21: "INDICATE",
    0x30: "LOG",
    0x31: "HEALTH",
    0x7F: "ACK",
}

# ACK status
STATUS_OK = const(0)
STATUS_BAD_REQUEST = const(1)
STATUS_REFUSED = const(2)

# CARD_ERROR stages
STAGE_INIT = const(0)
STAGE_FIND = const(1)
STAGE_SELECT = const(2)
STAGE_READ = const(3)
STAGE_DECODE = const(4)
STAGE_TIMEOUT = const(5)

# HELLO reset causes (0..15 mirror machine.reset_cause() on a board; 0 = unknown/power-on)
CAUSE_POWER_ON = const(0)
CAUSE_LINK = const(0x10)  # not a restart: the MCU reopened its host link

# LOG levels
DEBUG = const(10)
INFO = const(20)
WARNING = const(30)
ERROR = const(40)


class BridgeError(ProtocolError):
    """Bytes on the bridge link that are not a valid frame."""

    code = "bridge"


class BadFrame(BridgeError):
    """Bytes between two delimiters that do not decode to a valid packet."""

    code = "bad_frame"


class BadCobs(BadFrame):
    """The COBS encoding is broken (a code byte points past the end of the frame)."""

    code = "cobs"


class BadCrc(BadFrame):
    """The CRC-16 of the packet does not match."""

    code = "crc"


class ShortFrame(BadFrame):
    """The packet is shorter than 6 bytes (header + CRC)."""

    code = "short"


class LongFrame(BadFrame):
    """The packet decodes to more than MAX_PACKET bytes."""

    code = "long"


class BadVersion(BadFrame):
    """The packet's VER byte is not 1."""

    code = "version"


class Oversized(BridgeError):
    """More than MAX_ENCODED bytes arrived without a delimiter; skipped to the next 00."""

    code = "oversized"


# ---------------------------------------------------------------- CRC-16/CCITT-FALSE


def _make_table():
    table = []
    for i in range(256):
        c = i << 8
        for _ in range(8):
            c = ((c << 1) ^ 0x1021) if c & 0x8000 else (c << 1)
        table.append(c & 0xFFFF)
    return table


_CRC_TABLE = _make_table()


def crc16(data, start=0, end=None, crc=0xFFFF):
    """CRC-16/CCITT-FALSE of ``data[start:end]``; ``crc16(b"123456789") == 0x29B1``."""
    if end is None:
        end = len(data)
    table = _CRC_TABLE
    for i in range(start, end):
        crc = ((crc << 8) & 0xFFFF) ^ table[((crc >> 8) ^ data[i]) & 0xFF]
    return crc


# ---------------------------------------------------------------- COBS


def cobs_encode(data):
    """COBS-encode ``data`` (no delimiter added): every 00 is replaced by a distance byte.

    Output = len(data) + 1 + one more byte per full 254-byte run of non-zero bytes.
    """
    out = bytearray(len(data) + len(data) // 254 + 1)
    code_at = 0
    code = 1
    o = 1
    for b in data:
        if b == 0:
            out[code_at] = code
            code_at = o
            o += 1
            code = 1
        else:
            out[o] = b
            o += 1
            code += 1
            if code == 0xFF:
                out[code_at] = code
                code_at = o
                o += 1
                code = 1
    out[code_at] = code
    return bytes(out[:o])


def cobs_decode_into(src, n, dst):
    """Decode ``src[:n]`` (no delimiter) into ``dst``; return the decoded length.

    Returns -1 for broken COBS (a 00 inside, or a code byte running past the end) and -2 when
    the result would not fit ``dst``.
    """
    i = 0
    o = 0
    cap = len(dst)
    while i < n:
        code = src[i]
        if code == 0:
            return -1
        i += 1
        end = i + code - 1
        if end > n:
            return -1
        if o + (end - i) > cap:
            return -2
        while i < end:
            b = src[i]
            if b == 0:
                return -1
            dst[o] = b
            o += 1
            i += 1
        if code != 0xFF and i < n:
            if o >= cap:
                return -2
            dst[o] = 0
            o += 1
    return o


def cobs_decode(data):
    """COBS-decode ``data`` (no delimiter); raises ``BadCobs`` when it is not valid COBS."""
    dst = bytearray(len(data))
    n = cobs_decode_into(data, len(data), dst)
    if n < 0:
        raise BadCobs("broken COBS encoding", data)
    return bytes(dst[:n])


# ---------------------------------------------------------------- frames


class Message:
    """One decoded packet: ``type``, ``seq`` (0..65535) and ``payload`` (bytes)."""

    __slots__ = ("payload", "seq", "type")

    def __init__(self, msg_type, seq, payload=b""):
        self.type = msg_type
        self.seq = seq
        self.payload = bytes(payload)

    @property
    def name(self):
        """The message type's name (``"CARD"``), or ``"0xNN"`` for an unknown type."""
        return TYPE_NAMES.get(self.type) or f"0x{self.type:02X}"

    def __eq__(self, other):
        return (
            isinstance(other, Message)
            and self.type == other.type
            and self.seq == other.seq
            and self.payload == other.payload
        )

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return hash((self.type, self.seq, self.payload))

    def __repr__(self):
        return f"Message({self.name}, seq={self.seq}, {len(self.payload)} bytes)"


def packet(msg_type, seq, payload=b""):
    """The unframed packet: VER TYPE SEQ_HI SEQ_LO PAYLOAD CRC_HI CRC_LO."""
    n = len(payload)
    if n > MAX_PAYLOAD:
        raise ValueError(f"payload of {n} bytes exceeds {MAX_PAYLOAD}")
    if not 0 <= msg_type <= 0xFF or not 0 <= seq <= 0xFFFF:
        raise ValueError("type or seq out of range")
    buf = bytearray(HEADER_SIZE + n + CRC_SIZE)
    buf[0] = VERSION
    buf[1] = msg_type
    buf[2] = seq >> 8
    buf[3] = seq & 0xFF
    buf[4 : 4 + n] = payload
    crc = crc16(buf, 0, 4 + n)
    buf[4 + n] = crc >> 8
    buf[5 + n] = crc & 0xFF
    return bytes(buf)


def encode(msg_type, seq, payload=b""):
    """The complete frame for the wire: COBS(packet) followed by the 00 delimiter."""
    return cobs_encode(packet(msg_type, seq, payload)) + b"\x00"


class Decoder:
    """Stream decoder: bytes in any chunking -> ``Message`` / ``BridgeError`` items.

    ``feed(data)`` never raises for bad input. Empty frames (00 00) are ignored: a sender may
    put a 00 before a frame to flush a partial one. Counters: ``frames`` (good messages),
    ``bad_frames`` (every ``BadFrame``), ``oversized``. The two buffers are preallocated and
    never grow (``MAX_ENCODED`` and ``MAX_PACKET`` bytes).
    """

    def __init__(self):
        self._buf = bytearray(MAX_ENCODED)
        self._pkt = bytearray(MAX_PACKET)
        self._len = 0
        self._skipping = False  # after an overflow: drop bytes up to the next 00
        self.frames = 0
        self.bad_frames = 0
        self.oversized = 0

    @property
    def pending(self):
        """Bytes of a partial frame held in the buffer."""
        return self._len

    def reset(self):
        """Drop any partial frame (for example after the link was reopened)."""
        self._len = 0
        self._skipping = False

    def feed(self, data):
        """Add received bytes; return the list of items they completed, in stream order."""
        out = []
        if not isinstance(data, (bytes, bytearray)):
            data = bytes(data)
        n = len(data)
        pos = 0
        buf = self._buf
        cap = len(buf)
        while pos < n:
            idx = data.find(b"\x00", pos)
            end = n if idx < 0 else idx
            if self._skipping:
                if idx < 0:
                    break
                self._skipping = False
                pos = idx + 1
                continue
            take = end - pos
            if take > cap - self._len:
                dropped = self._len + take
                self._len = 0
                self.oversized += 1
                out.append(Oversized(f"over {dropped - 1} bytes without a delimiter"))
                if idx < 0:
                    self._skipping = True
                    break
                pos = idx + 1
                continue
            buf[self._len : self._len + take] = data[pos:end]
            self._len += take
            if idx < 0:
                break
            pos = idx + 1
            if self._len:
                out.append(self._frame())
                self._len = 0
        return out

    def _bad(self, cls, text):
        self.bad_frames += 1
        return cls(text, self._buf[: self._len])

    def _frame(self):
        pkt = self._pkt
        n = cobs_decode_into(self._buf, self._len, pkt)
        if n == -2:
            return self._bad(LongFrame, f"packet longer than {MAX_PACKET} bytes")
        if n < 0:
            return self._bad(BadCobs, f"broken COBS in {self._len} bytes")
        if n < MIN_PACKET:
            return self._bad(ShortFrame, f"packet of {n} bytes, minimum {MIN_PACKET}")
        want = (pkt[n - 2] << 8) | pkt[n - 1]
        got = crc16(pkt, 0, n - 2)
        if want != got:
            return self._bad(BadCrc, f"CRC {want:04X}, computed {got:04X}")
        if pkt[0] != VERSION:
            return self._bad(BadVersion, f"version {pkt[0]}, expected {VERSION}")
        self.frames += 1
        return Message(pkt[1], (pkt[2] << 8) | pkt[3], pkt[4 : n - 2])


def decode(frame):
    """Decode exactly one frame (with or without its trailing 00); raise its ``BridgeError``."""
    if len(frame) > MAX_ENCODED + 1:
        raise Oversized(f"{len(frame)} bytes exceed one frame")
    dec = Decoder()
    items = dec.feed(bytes(frame) if frame[-1:] == b"\x00" else bytes(frame) + b"\x00")
    if len(items) != 1:
        raise BadFrame(f"expected one frame, got {len(items)} items")
    if isinstance(items[0], BridgeError):
        raise items[0]
    return items[0]


# ---------------------------------------------------------------- sequence numbers


class Peer:
    """Sequence numbers of one link: ours going out, the peer's coming in.

    ``next_seq()`` numbers our new messages (0, 1, ..., 65535, 0, ...); a retransmission
    reuses the old number. ``accept(msg)`` classifies an incoming message: ``"duplicate"``
    when it repeats the last accepted packet (same SEQ, type and payload: a retransmission),
    otherwise ``"new"``; a forward jump of k > 1 adds k - 1 to ``lost``. A HELLO, a backward
    jump (the peer restarted) or the first message resynchronises without counting losses.
    """

    def __init__(self):
        self._out = 0
        self._last = None  # (seq, type, payload) of the last accepted message
        self.lost = 0
        self.duplicates = 0
        self.resyncs = 0

    def next_seq(self):
        """SEQ for a new outgoing message."""
        seq = self._out
        self._out = (seq + 1) & 0xFFFF
        return seq

    def reset(self):
        """Forget the peer's last SEQ (link reopened, or the peer said HELLO)."""
        self._last = None

    def accept(self, msg):
        """``"new"`` or ``"duplicate"`` for an incoming message; updates the counters."""
        last = self._last
        if msg.type == HELLO or last is None:
            self._last = (msg.seq, msg.type, msg.payload)
            return "new"
        diff = (msg.seq - last[0]) & 0xFFFF
        if diff == 0 and msg.type == last[1] and msg.payload == last[2]:
            self.duplicates += 1
            return "duplicate"
        if diff == 0 or diff >= 0x8000:
            self.resyncs += 1  # same SEQ with other content, or backwards: peer restarted
        elif diff > 1:
            self.lost += diff - 1
        self._last = (msg.seq, msg.type, msg.payload)
        return "new"


# ---------------------------------------------------------------- payloads


def _u16(b, i):
    return (b[i] << 8) | b[i + 1]


def _u32(b, i):
    return (b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]


def _be16(n):
    return bytes(((n >> 8) & 0xFF, n & 0xFF))


def _be32(n):
    return bytes(((n >> 24) & 0xFF, (n >> 16) & 0xFF, (n >> 8) & 0xFF, n & 0xFF))


def _text(s, room):
    """UTF-8 of ``s``, cut at a character boundary to at most ``room`` bytes."""
    s = s[:room]  # a character is at least one byte
    b = s.encode("utf-8")
    while len(b) > room:
        s = s[:-1]
        b = s.encode("utf-8")
    return b


def _need(payload, n, what):
    if len(payload) < n:
        raise BadFrame(f"{what} payload of {len(payload)} bytes, need {n}")


def _utf8(b):
    try:
        return bytes(b).decode("utf-8")
    except UnicodeError:
        raise BadFrame("payload text is not UTF-8") from None


def hello_payload(reset_cause, version):
    """HELLO: reset_cause(1) + version (UTF-8)."""
    return bytes((reset_cause & 0xFF,)) + _text(version, MAX_PAYLOAD - 1)


def parse_hello(payload):
    """HELLO payload -> (reset_cause, version)."""
    _need(payload, 1, "HELLO")
    return payload[0], _utf8(payload[1:])


def ping_payload(token):
    """PING: token(4, BE)."""
    return _be32(token & 0xFFFFFFFF)


def parse_ping(payload):
    """PING payload -> token (int)."""
    _need(payload, 4, "PING")
    return _u32(payload, 0)


def pong_payload(token, uptime_ms, version):
    """PONG: token(4) uptime_ms(4, BE, wraps after 49.7 days) + version (UTF-8)."""
    head = _be32(token & 0xFFFFFFFF) + _be32(uptime_ms & 0xFFFFFFFF)
    return head + _text(version, MAX_PAYLOAD - 8)


def parse_pong(payload):
    """PONG payload -> {"token", "uptime_ms", "version"}."""
    _need(payload, 8, "PONG")
    return {"token": _u32(payload, 0), "uptime_ms": _u32(payload, 4), "version": _utf8(payload[8:])}


# Dropped in this order when a card's JSON would not fit MAX_PAYLOAD (then "truncated": true).
_CARD_SHED = ("address", "english_name", "authority")


def card_payload(card, cycle_ms):
    """CARD: compact JSON with sorted keys of ``card`` plus ``cycle_ms`` (UTF-8).

    Photo and fingerprint bytes are never part of ``card``. When the JSON exceeds
    ``MAX_PAYLOAD`` (only for pathological texts), address, English name and authority are
    dropped in that order and ``"truncated": true`` is added.
    """
    obj = {}
    for key in card:
        obj[key] = card[key]
    obj["cycle_ms"] = cycle_ms
    data = dumps(obj).encode("utf-8")
    for key in _CARD_SHED:
        if len(data) <= MAX_PAYLOAD:
            break
        obj.pop(key, None)
        obj["truncated"] = True
        data = dumps(obj).encode("utf-8")
    if len(data) > MAX_PAYLOAD:
        raise ValueError(f"card JSON of {len(data)} bytes does not fit")
    return data


def _json(payload, what):
    import json

    try:
        obj = json.loads(_utf8(payload))
    except ValueError:
        raise BadFrame(f"{what} payload is not JSON") from None
    if not isinstance(obj, dict):
        raise BadFrame(f"{what} payload is not a JSON object")
    return obj


def parse_card(payload):
    """CARD payload -> the card dict (with ``cycle_ms``)."""
    return _json(payload, "CARD")


def card_error_payload(stage, sw3, detail=""):
    """CARD_ERROR: stage(1) sw3(1) + detail (UTF-8)."""
    return bytes((stage & 0xFF, sw3 & 0xFF)) + _text(detail, MAX_PAYLOAD - 2)


def parse_card_error(payload):
    """CARD_ERROR payload -> (stage, sw3, detail)."""
    _need(payload, 2, "CARD_ERROR")
    return payload[0], payload[1], _utf8(payload[2:])


def relay_payload(open_ms):
    """RELAY: open_ms(2, BE), 0..65535; 0 closes the relay now."""
    if not 0 <= open_ms <= 0xFFFF:
        raise ValueError("open_ms must be 0..65535")
    return _be16(open_ms)


def parse_relay(payload):
    """RELAY payload -> open_ms."""
    if len(payload) != 2:
        raise BadFrame(f"RELAY payload of {len(payload)} bytes, need 2")
    return _u16(payload, 0)


def indicate_payload(green, red, buzzer_ms=0, show_ms=0):
    """INDICATE: green(1) red(1) buzzer_ms(2, BE) show_ms(2, BE); show_ms 0 = until changed."""
    return bytes((1 if green else 0, 1 if red else 0)) + _be16(buzzer_ms) + _be16(show_ms)


def parse_indicate(payload):
    """INDICATE payload -> (green, red, buzzer_ms, show_ms)."""
    if len(payload) != 6:
        raise BadFrame(f"INDICATE payload of {len(payload)} bytes, need 6")
    return payload[0] != 0, payload[1] != 0, _u16(payload, 2), _u16(payload, 4)


def ack_payload(seq, status=STATUS_OK, data=b""):
    """ACK: acked_seq(2, BE) status(1) + data (RELAY: granted_ms(2, BE))."""
    return _be16(seq) + bytes((status & 0xFF,)) + bytes(data)


def parse_ack(payload):
    """ACK payload -> (acked_seq, status, data)."""
    _need(payload, 3, "ACK")
    return _u16(payload, 0), payload[2], bytes(payload[3:])


def log_payload(level, text):
    """LOG: level(1) + text (UTF-8, cut to fit)."""
    return bytes((level & 0xFF,)) + _text(text, MAX_PAYLOAD - 1)


def parse_log(payload):
    """LOG payload -> (level, text)."""
    _need(payload, 1, "LOG")
    return payload[0], _utf8(payload[1:])


def health_payload(health):
    """HEALTH: compact JSON with sorted keys (no floats) of the ``health`` dict."""
    data = dumps(health).encode("utf-8")
    if len(data) > MAX_PAYLOAD:
        raise ValueError(f"HEALTH JSON of {len(data)} bytes does not fit")
    return data


def parse_health(payload):
    """HEALTH payload -> dict."""
    return _json(payload, "HEALTH")
