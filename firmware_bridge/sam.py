"""SAM (GA/T 467) frame protocol of the ID-card reader: builders, a streaming parser, payloads.

Runs unchanged under MicroPython and CPython; see ``shared/protocols/idcard-sam.md``.

Wire format (both directions)::

    AA AA AA 96 69 | LEN_HI LEN_LO | body (LEN - 1 bytes) | CHK
    host -> module body:  CMD PARA DATA...          LEN = 2 + len(DATA) + 1
    module -> host body:  SW1 SW2 SW3 DATA...       LEN = 3 + len(DATA) + 1
    whole frame = 5 (preamble) + 2 (LEN) + LEN bytes = 7 + LEN
    CHK = XOR of LEN_HI .. last DATA byte (everything except the preamble and CHK)

A command without data is 5 + 2 + 3 = 10 bytes; the largest reply (read with fingerprint)
is 7 + 0x090A = 2321 bytes, which sizes every buffer here.
"""

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


from .errors import ChecksumError, LengthError, ProtocolError, SyncError, TruncatedError

PREAMBLE = b"\xaa\xaa\xaa\x96\x69"
HEADER_SIZE = const(7)  # preamble (5) + LEN_HI + LEN_LO
MAX_FRAME = const(2321)  # 7 + 0x090A: read text + photo + fingerprint
MAX_LEN = const(2314)  # MAX_FRAME - HEADER_SIZE
MIN_RESPONSE_LEN = const(4)  # SW1 SW2 SW3 CHK
MIN_COMMAND_LEN = const(3)  # CMD PARA CHK

# Commands (CMD, PARA)
CMD_RESET = const(0x10)
CMD_STATUS = const(0x11)
CMD_SAM_ID = const(0x12)
CMD_CARD = const(0x20)  # PARA 01 find, 02 select
CMD_READ = const(0x30)  # PARA 01 base, 10 base + fingerprint, 03 latest address
CMD_SET_BAUD = const(0x60)
CMD_SET_RF = const(0x61)
PARA_ANY = const(0xFF)
PARA_FIND = const(0x01)
PARA_SELECT = const(0x02)
PARA_READ_BASE = const(0x01)
PARA_READ_FINGER = const(0x10)
PARA_READ_ADDRESS = const(0x03)

# SW3 status codes
SW3_OK = const(0x90)
SW3_EMPTY = const(0x91)
SW3_FOUND = const(0x9F)
SW3_BAD_CHECKSUM = const(0x10)
SW3_BAD_LENGTH = const(0x11)
SW3_BAD_COMMAND = const(0x21)
SW3_NOT_PERMITTED = const(0x23)
SW3_UNKNOWN_ERROR = const(0x24)
SW3_READ_FAILED = const(0x41)
SW3_SELF_TEST_FAILED = const(0x60)
SW3_NO_CARD = const(0x80)
SW3_SELECT_FAILED = const(0x81)

STATUS_TEXT = {
    0x90: "success",
    0x91: "item empty on card",
    0x9F: "find card success",
    0x10: "checksum error in host frame",
    0x11: "length error in host frame",
    0x21: "bad command",
    0x23: "not permitted",
    0x24: "unknown error",
    0x31: "card failed to authenticate the SAM",
    0x32: "SAM failed to authenticate the card",
    0x33: "information verification error",
    0x40: "unrecognised card type",
    0x41: "read failed",
    0x47: "get-random failed",
    0x60: "SAM self-test failed",
    0x66: "SAM not authorised",
    0x80: "no card (find failed)",
    0x81: "select failed",
}

# Baud rate -> PARA of command 60.
BAUD_CODES = {115200: 0, 57600: 1, 38400: 2, 19200: 3, 9600: 4}
RF_BYTES_MIN = const(24)
RF_BYTES_MAX = const(255)

# Read-base payload (after SW3):
#   30 01: TEXT_LEN(2, BE) PHOTO_LEN(2, BE) TEXT PHOTO             -> text at data[4]
#   30 10: TEXT_LEN(2, BE) PHOTO_LEN(2, BE) FINGER_LEN(2, BE) TEXT PHOTO FINGER -> data[6]
# In the whole frame: 7 (header) + 3 (SW) + 4 or 6 = text at frame byte 14 or 16.
TEXT_SIZE = const(256)
PHOTO_SIZE = const(1024)
FINGER_SIZE = const(1024)  # two 512-byte templates
ADDRESS_SIZE = const(70)
CHIP_SERIAL_SIZE = const(8)
SAM_ID_SIZE = const(16)


def status_text(sw3):
    """English meaning of an SW3 code, so logs and tools never show a bare number."""
    text = STATUS_TEXT.get(sw3)
    if text is None:
        return f"unknown status 0x{sw3:02X}"
    return text


def checksum(buf, start=0, end=None):
    """XOR of ``buf[start:end]``; the SAM protocol's only integrity check (one byte)."""
    if end is None:
        end = len(buf)
    c = 0
    for i in range(start, end):
        c ^= buf[i]
    return c


def build_frame(body):
    """Frame ``body`` (CMD PARA DATA or SW1 SW2 SW3 DATA): preamble, LEN, body, CHK.

    LEN = len(body) + 1 (the CHK byte); frame = 7 + LEN bytes.
    """
    n = len(body) + 1
    if HEADER_SIZE + n > MAX_FRAME:
        raise LengthError(f"frame of {HEADER_SIZE + n} bytes exceeds {MAX_FRAME}")
    out = bytearray(HEADER_SIZE + n)
    out[0:5] = PREAMBLE
    out[5] = n >> 8
    out[6] = n & 0xFF
    out[7 : 7 + len(body)] = body
    out[-1] = checksum(out, 5, len(out) - 1)
    return bytes(out)


def build_command(cmd, para, data=b""):
    """Host -> module frame; a command without data is 10 bytes (LEN 00 03)."""
    return build_frame(bytes((cmd, para)) + bytes(data))


def build_response(sw1, sw2, sw3, data=b""):
    """Module -> host frame (used by the simulated reader); no data gives LEN 00 04."""
    return build_frame(bytes((sw1, sw2, sw3)) + bytes(data))


def reset_command():
    """Reset SAM, 10 FF: ``AA AA AA 96 69 00 03 10 FF EC``."""
    return build_command(CMD_RESET, PARA_ANY)


def status_command():
    """SAM status (self-test), 11 FF: ``... 00 03 11 FF ED`` (not 12 FF)."""
    return build_command(CMD_STATUS, PARA_ANY)


def sam_id_command():
    """Read the SAM's 16-byte id, 12 FF: ``... 00 03 12 FF EE``."""
    return build_command(CMD_SAM_ID, PARA_ANY)


def find_card_command():
    """Find card, 20 01: ``... 00 03 20 01 22``; success is SW3 9F."""
    return build_command(CMD_CARD, PARA_FIND)


def select_card_command():
    """Select card, 20 02: ``... 00 03 20 02 21``; success is SW3 90 + 8-byte chip serial."""
    return build_command(CMD_CARD, PARA_SELECT)


def read_base_command(finger=False):
    """Read text + photo (30 01, ``... 32``) or text + photo + fingerprint (30 10, ``... 23``)."""
    return build_command(CMD_READ, PARA_READ_FINGER if finger else PARA_READ_BASE)


def read_address_command():
    """Read the latest appended address, 30 03: ``... 00 03 30 03 30``."""
    return build_command(CMD_READ, PARA_READ_ADDRESS)


def set_baud_command(baud):
    """Set the UART baud rate, 60 0x; ``baud`` is the rate itself (115200 ... 9600)."""
    code = BAUD_CODES.get(baud)
    if code is None:
        raise ValueError(f"unsupported baud rate {baud!r}")
    return build_command(CMD_SET_BAUD, code)


def set_rf_bytes_command(n):
    """Set the maximum RF frame bytes, 61 FF n (24..255): ``... 00 04 61 FF 50 CA`` for 80."""
    if not RF_BYTES_MIN <= n <= RF_BYTES_MAX:
        raise ValueError(f"RF bytes must be 24..255, got {n!r}")
    return build_command(CMD_SET_RF, PARA_ANY, bytes((n,)))


class Frame:
    """A checked module -> host reply: SW1 SW2 SW3, DATA and the raw frame bytes."""

    __slots__ = ("data", "raw", "sw1", "sw2", "sw3")

    def __init__(self, sw1, sw2, sw3, data, raw):
        self.sw1 = sw1
        self.sw2 = sw2
        self.sw3 = sw3
        self.data = data
        self.raw = raw

    @property
    def ok(self):
        """True for SW3 90 or 9F; success is judged on SW3 alone (SW1/SW2 are the card's)."""
        return self.sw3 == SW3_OK or self.sw3 == SW3_FOUND

    @property
    def status_text(self):
        """English meaning of SW3."""
        return status_text(self.sw3)

    def __repr__(self):
        sw = f"{self.sw1:02X} {self.sw2:02X} {self.sw3:02X}"
        return f"Frame(sw={sw}, {len(self.data)} data bytes)"


class Command:
    """A checked host -> module frame: CMD, PARA, DATA and the raw frame bytes."""

    __slots__ = ("cmd", "data", "para", "raw")

    def __init__(self, cmd, para, data, raw):
        self.cmd = cmd
        self.para = para
        self.data = data
        self.raw = raw

    def __repr__(self):
        return f"Command({self.cmd:02X} {self.para:02X}, {len(self.data)} data bytes)"


def _frame_from(raw):
    # raw = 7 header bytes + SW1 SW2 SW3 + DATA + CHK
    return Frame(raw[7], raw[8], raw[9], raw[10:-1], raw)


def _command_from(raw):
    # raw = 7 header bytes + CMD PARA + DATA + CHK
    return Command(raw[7], raw[8], raw[9:-1], raw)


class _StreamParser:
    """Reassembles frames from a byte stream of any chunking, with resynchronisation.

    Contract of ``feed(data)``: it never raises for bad input; it returns a list of items in
    stream order, each either a parsed frame or a ``ProtocolError`` instance (not raised):

    - ``SyncError``: a run of bytes before a preamble was skipped (one item per run, emitted
      when the next preamble is found or at ``close()``; runs that follow a frame error are
      attributed to that error and not reported again);
    - ``LengthError``: LEN below the minimum or 7 + LEN above ``MAX_FRAME``;
    - ``ChecksumError``: the CHK byte does not match.

    After a bad frame only its 5 preamble bytes are dropped and the search for the next
    preamble restarts inside it, so a good frame hiding behind a frame with dropped bytes or a
    corrupted LEN is still found. Keep calling ``feed()`` after errors. ``close()`` reports a
    partial frame at end of input as ``TruncatedError`` and resets. The receive buffer is one
    preallocated ``bytearray(MAX_FRAME)``: it never grows, whatever the chunk size.

    Counters: ``garbage_bytes`` (every byte skipped while searching for a preamble, including
    the bytes of bad frames), ``frames`` (good frames), ``errors`` (error items).
    """

    _min_len = MIN_RESPONSE_LEN

    def __init__(self):
        self._buf = bytearray(MAX_FRAME)
        self._start = 0  # first unconsumed byte
        self._end = 0  # one past the last received byte
        self._run = 0  # bytes skipped in the current garbage run
        self._quiet = False  # current run follows a reported frame error
        self.garbage_bytes = 0
        self.frames = 0
        self.errors = 0

    @property
    def pending(self):
        """Bytes received but not yet consumed (a partial frame or a preamble prefix)."""
        return self._end - self._start

    def reset(self):
        """Drop any partial frame and garbage run without reporting them."""
        self._start = 0
        self._end = 0
        self._run = 0
        self._quiet = False

    def _make(self, raw):
        return _frame_from(raw)

    def feed(self, data):
        """Add received bytes; return the list of frames and error items they completed."""
        out = []
        buf = self._buf
        if not isinstance(data, memoryview):
            data = memoryview(data)  # slices below then copy nothing
        n = len(data)
        pos = 0
        while pos < n:
            if self._end == len(buf):
                # Compact: move the unconsumed tail (always < MAX_FRAME bytes) to the front.
                keep = self._end - self._start
                buf[0:keep] = bytes(buf[self._start : self._end])
                self._start = 0
                self._end = keep
            take = min(n - pos, len(buf) - self._end)
            buf[self._end : self._end + take] = data[pos : pos + take]
            self._end += take
            pos += take
            self._scan(out)
            if self._start == self._end:
                self._start = self._end = 0  # empty: restart at the front, no compaction
        return out

    def close(self):
        """End of input: report a partial frame or trailing garbage, then reset."""
        out = []
        pending = self._end - self._start
        if pending >= 5:
            # _scan leaves >= 5 bytes only when they start with the preamble.
            err = TruncatedError(
                f"input ended {pending} bytes into a frame",
                self._buf[self._start : self._end],
            )
            self._report(out, err)
        else:
            self._skip(pending)
        if self._run and not self._quiet:
            self._report(out, SyncError(f"{self._run} bytes before a preamble skipped"))
        self.reset()
        return out

    def _report(self, out, err):
        self.errors += 1
        out.append(err)

    def _skip(self, count):
        self._start += count
        self._run += count
        self.garbage_bytes += count

    def _scan(self, out):
        buf = self._buf
        while True:
            avail = self._end - self._start
            if avail < 5 or buf[self._start : self._start + 5] != PREAMBLE:
                idx = buf.find(PREAMBLE, self._start, self._end)
                if idx < 0:
                    # Keep the longest tail that could begin a preamble (at most 4 bytes).
                    keep = min(4, avail)
                    while keep and buf[self._end - keep : self._end] != PREAMBLE[:keep]:
                        keep -= 1
                    self._skip(avail - keep)
                    return
                self._skip(idx - self._start)
            if self._run:
                if not self._quiet:
                    err = SyncError(f"{self._run} bytes before a preamble skipped")
                    self._report(out, err)
                self._run = 0
            self._quiet = False
            avail = self._end - self._start
            if avail < HEADER_SIZE:
                return
            s = self._start
            length = (buf[s + 5] << 8) | buf[s + 6]
            if length < self._min_len or length > MAX_LEN:
                err = LengthError(
                    f"LEN {length} outside {self._min_len}..{MAX_LEN}",
                    buf[s : s + HEADER_SIZE],
                )
                self._bad(out, err)
                continue
            size = HEADER_SIZE + length
            if avail < size:
                return
            # CHK covers LEN_HI (s + 5) .. last DATA byte (s + size - 2).
            expect = checksum(buf, s + 5, s + size - 1)
            if expect != buf[s + size - 1]:
                err = ChecksumError(
                    f"checksum {buf[s + size - 1]:02X}, expected {expect:02X}",
                    buf[s : s + size],
                )
                self._bad(out, err)
                continue
            raw = bytes(buf[s : s + size])
            self._start = s + size
            self.frames += 1
            out.append(self._make(raw))

    def _bad(self, out, err):
        # Drop only the preamble: the next frame may start inside what LEN claimed.
        self._report(out, err)
        self._skip(5)
        self._run = 0
        self._quiet = True


class ResponseParser(_StreamParser):
    """Stream parser for module -> host replies; items are ``Frame`` or ``ProtocolError``."""

    _min_len = MIN_RESPONSE_LEN


class CommandParser(_StreamParser):
    """Stream parser for host -> module commands (the simulated reader's side).

    Items are ``Command`` or ``ProtocolError``; the contract is ``ResponseParser``'s.
    """

    _min_len = MIN_COMMAND_LEN

    def _make(self, raw):
        return _command_from(raw)


def parse_frame(raw):
    """Parse exactly one complete reply frame, raising the specific ``ProtocolError``."""
    return _parse_one(ResponseParser(), raw)


def parse_command(raw):
    """Parse exactly one complete command frame, raising the specific ``ProtocolError``."""
    return _parse_one(CommandParser(), raw)


def _parse_one(parser, raw):
    if len(raw) > MAX_FRAME:
        raise LengthError(f"{len(raw)} bytes exceed MAX_FRAME {MAX_FRAME}")
    items = parser.feed(raw) + parser.close()
    for item in items:
        if isinstance(item, ProtocolError):
            raise item
    if len(items) != 1:
        raise ProtocolError(f"expected exactly one frame, got {len(items)}")
    return items[0]


def _u16(b, i):
    return (b[i] << 8) | b[i + 1]


def parse_read_base(frame):
    """Split a read-base reply into (text, photo, finger or None), all bytes.

    ``frame`` is a ``Frame`` (or its DATA as bytes). The layout is recognised from the sizes:
    30 01 data = 4 + TEXT_LEN + PHOTO_LEN, 30 10 data = 6 + TEXT_LEN + PHOTO_LEN + FINGER_LEN
    (the two can never both match). TEXT_LEN must be 256. Raises ``LengthError`` when the
    inner lengths do not add up to the data length, ``ProtocolError`` when SW3 is not 90.
    """
    if hasattr(frame, "sw3"):
        if frame.sw3 != SW3_OK:
            raise ProtocolError(f"read reply has SW3 {frame.sw3:02X}, not 90")
        data = frame.data
    else:
        data = frame
    n = len(data)
    if n < 4:
        raise LengthError(f"read reply data of {n} bytes has no length header")
    text_len = _u16(data, 0)
    photo_len = _u16(data, 2)
    finger_len = None
    if 4 + text_len + photo_len == n:
        off = 4
    elif n >= 6 and 6 + text_len + photo_len + _u16(data, 4) == n:
        finger_len = _u16(data, 4)
        off = 6
    else:
        detail = f"text {text_len} + photo {photo_len} bytes do not match {n} data bytes"
        raise LengthError("read reply lengths: " + detail)
    if text_len != TEXT_SIZE:
        raise LengthError(f"TEXT_LEN {text_len}, expected {TEXT_SIZE}")
    text = bytes(data[off : off + text_len])
    off += text_len
    photo = bytes(data[off : off + photo_len])
    off += photo_len
    finger = None
    if finger_len is not None:
        finger = bytes(data[off : off + finger_len])
    return text, photo, finger


def read_base_data(text, photo, finger=None):
    """Build the read-base DATA (after SW3) for 30 01 (no ``finger``) or 30 10."""
    if finger is None:
        head = bytes((len(text) >> 8, len(text) & 0xFF, len(photo) >> 8, len(photo) & 0xFF))
        return head + bytes(text) + bytes(photo)
    head = bytes(
        (
            len(text) >> 8,
            len(text) & 0xFF,
            len(photo) >> 8,
            len(photo) & 0xFF,
            len(finger) >> 8,
            len(finger) & 0xFF,
        )
    )
    return head + bytes(text) + bytes(photo) + bytes(finger)


def parse_select(frame):
    """The 8-byte chip serial of a successful select reply (SW3 90, LEN 00 0C)."""
    if frame.sw3 != SW3_OK:
        raise ProtocolError(f"select reply has SW3 {frame.sw3:02X}, not 90")
    if len(frame.data) != CHIP_SERIAL_SIZE:
        raise LengthError(f"select reply carries {len(frame.data)} bytes, expected 8")
    return bytes(frame.data)


def parse_sam_id(data):
    """SAM id fields (b0, b2, u32, u32, u32) from the 16 reply bytes.

    Layout: b0, b1 (unused), b2, b3 (unused), then three little-endian uint32 at 4, 8, 12.
    """
    if len(data) != SAM_ID_SIZE:
        raise LengthError(f"SAM id of {len(data)} bytes, expected 16")
    words = []
    for off in (4, 8, 12):
        words.append(data[off] | data[off + 1] << 8 | data[off + 2] << 16 | data[off + 3] << 24)
    return (data[0], data[2], words[0], words[1], words[2])


def format_sam_id(data):
    """SAM id as conventionally printed: ``%02d.%02d`` then the three words, dash-separated."""
    b0, b2, w1, w2, w3 = parse_sam_id(data)
    return f"{b0:02d}.{b2:02d}-{w1:08d}-{w2:010d}-{w3:010d}"
