"""SAM frame protocol: exact command bytes, example replies, the streaming parser."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge import sam
from firmware_bridge.errors import (
    ChecksumError,
    LengthError,
    ProtocolError,
    SyncError,
    TruncatedError,
)


def h(text: str) -> bytes:
    """Hex with spaces (as in the protocol sheet) to bytes."""
    return bytes.fromhex(text)


PRE = "AA AA AA 96 69 "

# Every command row of the protocol sheet, as printed there.
COMMAND_VECTORS = [
    (sam.reset_command, (), PRE + "00 03 10 FF EC"),
    (sam.status_command, (), PRE + "00 03 11 FF ED"),
    (sam.sam_id_command, (), PRE + "00 03 12 FF EE"),
    (sam.find_card_command, (), PRE + "00 03 20 01 22"),
    (sam.select_card_command, (), PRE + "00 03 20 02 21"),
    (sam.read_base_command, (), PRE + "00 03 30 01 32"),
    (sam.read_base_command, (True,), PRE + "00 03 30 10 23"),
    (sam.read_address_command, (), PRE + "00 03 30 03 30"),
    (sam.set_baud_command, (115200,), PRE + "00 03 60 00 63"),
    (sam.set_baud_command, (57600,), PRE + "00 03 60 01 62"),
    (sam.set_baud_command, (38400,), PRE + "00 03 60 02 61"),
    (sam.set_baud_command, (19200,), PRE + "00 03 60 03 60"),
    (sam.set_baud_command, (9600,), PRE + "00 03 60 04 67"),
    (sam.set_rf_bytes_command, (0x50,), PRE + "00 04 61 FF 50 CA"),
]


@pytest.mark.parametrize(("builder", "args", "expected"), COMMAND_VECTORS)
def test_command_frames_match_the_sheet(builder, args, expected):
    assert builder(*args) == h(expected)


def test_commands_without_data_are_ten_bytes():
    for builder, args, _ in COMMAND_VECTORS[:-1]:
        assert len(builder(*args)) == 10


def test_known_wrong_frames_are_not_produced():
    # Status is 11 FF (not 12 FF), reset 10 FF (not 01 FF), find's checksum is 22 (not 21).
    assert sam.status_command()[7:9] == b"\x11\xff"
    assert sam.reset_command()[7:9] == b"\x10\xff"
    assert sam.find_card_command()[-1] == 0x22


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError):
        sam.set_baud_command(4800)
    with pytest.raises(ValueError):
        sam.set_rf_bytes_command(23)
    with pytest.raises(ValueError):
        sam.set_rf_bytes_command(256)
    assert sam.set_rf_bytes_command(24)[-2] == 24
    assert sam.set_rf_bytes_command(255)[-2] == 255


REPLY_VECTORS = [
    ((0, 0, 0x90), PRE + "00 04 00 00 90 94"),
    ((0, 0, 0x9F, bytes(4)), PRE + "00 08 00 00 9F 00 00 00 00 97"),
    ((0, 0, 0x80), PRE + "00 04 00 00 80 84"),
]


@pytest.mark.parametrize(("args", "expected"), REPLY_VECTORS)
def test_example_replies(args, expected):
    raw = h(expected)
    assert sam.build_response(*args) == raw
    frame = sam.parse_frame(raw)
    assert (frame.sw1, frame.sw2, frame.sw3) == args[:3]
    assert frame.raw == raw
    assert frame.ok == (args[2] in (0x90, 0x9F))
    assert frame.status_text == sam.status_text(args[2])


def test_select_reply_structure():
    serial = bytes(range(1, 9))
    raw = sam.build_response(0, 0, 0x90, serial)
    # 7 header + SW1 SW2 SW3 + 8 serial + CHK = 19 bytes, LEN 00 0C
    assert len(raw) == 19
    assert raw[5:7] == b"\x00\x0c"
    assert raw[7:10] == b"\x00\x00\x90"
    assert raw[-1] == sam.checksum(raw[5:-1])
    assert sam.parse_select(sam.parse_frame(raw)) == serial
    with pytest.raises(ProtocolError):
        sam.parse_select(sam.parse_frame(h(PRE + "00 04 00 00 81 85")))


def test_status_text_covers_the_sheet_and_falls_back():
    for code in (
        0x90,
        0x91,
        0x9F,
        0x10,
        0x11,
        0x21,
        0x23,
        0x24,
        0x31,
        0x32,
        0x33,
        0x40,
        0x41,
        0x47,
        0x60,
        0x66,
        0x80,
        0x81,
    ):
        assert code in sam.STATUS_TEXT
    assert sam.status_text(0x9F) == "find card success"
    assert sam.status_text(0x80) == "no card (find failed)"
    assert sam.status_text(0x05) == "unknown status 0x05"


def test_sam_id_parsing():
    data = bytes((5, 0, 1, 0)) + (20230101).to_bytes(4, "little") + bytes(4) + b"\xff" * 4
    assert sam.parse_sam_id(data) == (5, 1, 20230101, 0, 0xFFFFFFFF)
    assert sam.format_sam_id(data) == "05.01-20230101-0000000000-4294967295"
    with pytest.raises(LengthError):
        sam.parse_sam_id(data[:-1])


# ------------------------------------------------------------------ read-base payloads

TEXT = bytes(range(256))
PHOTO = bytes((i * 3) & 0xFF for i in range(1024))
FINGER = bytes((i * 7) & 0xFF for i in range(1024))


def test_read_base_reply_sizes_and_offsets():
    base = sam.build_response(0, 0, 0x90, sam.read_base_data(TEXT, PHOTO))
    finger = sam.build_response(0, 0, 0x90, sam.read_base_data(TEXT, PHOTO, FINGER))
    assert len(base) == 1295 and base[5:7] == b"\x05\x08"
    assert len(finger) == 2321 == sam.MAX_FRAME and finger[5:7] == b"\x09\x0a"
    assert base[10:14] == b"\x01\x00\x04\x00"
    # Text starts at frame byte 14 (30 01) or 16 (30 10); fingerprint at +256 after photo.
    assert base[14 : 14 + 256] == TEXT
    assert finger[16 : 16 + 256] == TEXT
    assert finger[16 + 256 + 1024 : 16 + 256 + 1024 + 1024] == FINGER


def test_parse_read_base_both_layouts():
    base = sam.parse_frame(sam.build_response(0, 0, 0x90, sam.read_base_data(TEXT, PHOTO)))
    assert sam.parse_read_base(base) == (TEXT, PHOTO, None)
    data = sam.read_base_data(TEXT, PHOTO, FINGER)
    full = sam.parse_frame(sam.build_response(0, 0, 0x90, data))
    assert sam.parse_read_base(full) == (TEXT, PHOTO, FINGER)
    assert sam.parse_read_base(data) == (TEXT, PHOTO, FINGER)


def test_parse_read_base_rejects_inconsistent_lengths():
    data = bytearray(sam.read_base_data(TEXT, PHOTO))
    with pytest.raises(LengthError):
        sam.parse_read_base(bytes(data[:-1]))
    data[3] = 0x01  # PHOTO_LEN 0x0401: one more than present
    with pytest.raises(LengthError):
        sam.parse_read_base(bytes(data))
    with pytest.raises(LengthError):
        sam.parse_read_base(sam.read_base_data(TEXT[:200], PHOTO))
    with pytest.raises(LengthError):
        sam.parse_read_base(b"\x01")
    failed = sam.parse_frame(sam.build_response(0, 0, 0x41))
    with pytest.raises(ProtocolError):
        sam.parse_read_base(failed)


# ------------------------------------------------------------------ streaming parser


def frames_of(items):
    return [i.raw for i in items if isinstance(i, sam.Frame)]


def errors_of(items):
    return [type(i) for i in items if isinstance(i, ProtocolError)]


SAMPLE_REPLIES = [
    h(PRE + "00 04 00 00 90 94"),
    h(PRE + "00 08 00 00 9F 00 00 00 00 97"),
    sam.build_response(0, 0, 0x90, bytes(range(8))),
    sam.build_response(0, 0, 0x90, sam.read_base_data(TEXT, PHOTO, FINGER)),
    h(PRE + "00 04 00 00 80 84"),
    sam.build_response(0x12, 0x34, 0x41),
]
STREAM = b"".join(SAMPLE_REPLIES)


def feed_in_pieces(parser, data, cuts):
    items = []
    prev = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        items.extend(parser.feed(data[prev:cut]))
        prev = cut
    return items + parser.close()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=40))
def test_any_chunking_gives_the_same_frames(cuts):
    parser = sam.ResponseParser()
    items = feed_in_pieces(parser, STREAM, cuts)
    assert frames_of(items) == SAMPLE_REPLIES
    assert errors_of(items) == []
    assert parser.garbage_bytes == 0 and parser.frames == len(SAMPLE_REPLIES)


def test_byte_by_byte_feed():
    parser = sam.ResponseParser()
    items = []
    for b in STREAM:
        items.extend(parser.feed(bytes((b,))))
    assert frames_of(items) == SAMPLE_REPLIES


def test_parser_accepts_bytearray_and_memoryview():
    parser = sam.ResponseParser()
    assert frames_of(parser.feed(bytearray(STREAM))) == SAMPLE_REPLIES
    assert frames_of(parser.feed(memoryview(STREAM))) == SAMPLE_REPLIES


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.binary(max_size=30).filter(lambda b: b"\xaa" not in b),
        min_size=len(SAMPLE_REPLIES) + 1,
        max_size=len(SAMPLE_REPLIES) + 1,
    )
)
def test_garbage_before_and_between_frames_resyncs(garbage):
    data = b""
    for junk, frame in zip(garbage, SAMPLE_REPLIES, strict=False):
        data += junk + frame
    data += garbage[-1]
    parser = sam.ResponseParser()
    items = parser.feed(data) + parser.close()
    assert frames_of(items) == SAMPLE_REPLIES
    assert parser.garbage_bytes == sum(len(g) for g in garbage)
    assert errors_of(items) == [SyncError] * sum(1 for g in garbage if g)


def test_garbage_that_looks_like_a_preamble_start():
    good = SAMPLE_REPLIES[0]
    parser = sam.ResponseParser()
    items = parser.feed(b"\xaa\xaa\xaa\xaa\x96" + b"\xaa" + good)
    assert frames_of(items) == [good]
    assert parser.garbage_bytes == 6
    assert errors_of(items) == [SyncError]
    assert "6 bytes" in str(items[0])


def test_bad_checksum_reports_and_keeps_the_next_frame():
    bad = bytearray(SAMPLE_REPLIES[1])
    bad[-1] ^= 0x01
    parser = sam.ResponseParser()
    items = parser.feed(bytes(bad) + SAMPLE_REPLIES[2] + SAMPLE_REPLIES[0])
    assert errors_of(items) == [ChecksumError]
    assert items[0].raw == bytes(bad)
    assert frames_of(items) == [SAMPLE_REPLIES[2], SAMPLE_REPLIES[0]]
    assert isinstance(items[0], ValueError)


def test_frame_with_dropped_bytes_does_not_swallow_the_next():
    # A UART overrun drops bytes: LEN then claims bytes of the next frame.
    big = SAMPLE_REPLIES[3]
    damaged = big[:100] + big[110:]
    parser = sam.ResponseParser()
    items = parser.feed(damaged + SAMPLE_REPLIES[0] + SAMPLE_REPLIES[4] + SAMPLE_REPLIES[1])
    items += parser.close()
    assert errors_of(items)[0] is ChecksumError
    assert SyncError not in errors_of(items)
    # Checksum failed over big's LEN: the frames behind were re-found inside it.
    assert frames_of(items)[-2:] == [SAMPLE_REPLIES[4], SAMPLE_REPLIES[1]]


@pytest.mark.parametrize("length", [0, 1, 2, 3, 0x090B, 0xFFFF])
def test_bad_len_is_a_length_error(length):
    frame = h(PRE) + bytes((length >> 8, length & 0xFF)) + b"\x00\x00\x90\x00"
    parser = sam.ResponseParser()
    items = parser.feed(frame + SAMPLE_REPLIES[0])
    assert errors_of(items) == [LengthError]
    assert frames_of(items) == [SAMPLE_REPLIES[0]]


def test_largest_len_is_accepted():
    assert sam.MAX_LEN == 0x090A
    data = bytes(0x090A - 4)
    raw = sam.build_response(0, 0, 0x90, data)
    assert len(raw) == sam.MAX_FRAME
    assert sam.parse_frame(raw).data == data
    with pytest.raises(LengthError):
        sam.build_response(0, 0, 0x90, data + b"\x00")


def test_truncated_frame_at_close():
    parser = sam.ResponseParser()
    assert parser.feed(SAMPLE_REPLIES[1][:-3]) == []
    assert parser.pending == len(SAMPLE_REPLIES[1]) - 3
    items = parser.close()
    assert errors_of(items) == [TruncatedError]
    assert parser.pending == 0
    # The parser is usable after close().
    assert frames_of(parser.feed(SAMPLE_REPLIES[0])) == [SAMPLE_REPLIES[0]]


def test_parse_frame_raises_the_specific_error():
    bad = bytearray(SAMPLE_REPLIES[0])
    bad[-1] ^= 0xFF
    with pytest.raises(ChecksumError):
        sam.parse_frame(bytes(bad))
    with pytest.raises(TruncatedError):
        sam.parse_frame(SAMPLE_REPLIES[0][:-1])
    with pytest.raises(LengthError):
        sam.parse_frame(h(PRE + "00 02 00 00"))
    with pytest.raises(SyncError):
        sam.parse_frame(SAMPLE_REPLIES[0] + b"\x01")
    with pytest.raises(ProtocolError):
        sam.parse_frame(SAMPLE_REPLIES[0] * 2)


def test_buffer_is_bounded():
    parser = sam.ResponseParser()
    buf = parser._buf
    junk = bytes((i * 7) & 0x7F for i in range(50_000))
    parser.feed(junk)
    parser.feed(STREAM * 3)
    parser.feed(junk + STREAM[:2000])
    assert parser._buf is buf and len(buf) == sam.MAX_FRAME
    assert parser.pending <= sam.MAX_FRAME


def test_command_parser_reads_host_frames():
    parser = sam.CommandParser()
    stream = b"\x00" + sam.find_card_command() + sam.set_rf_bytes_command(80)
    items = parser.feed(stream)
    cmds = [i for i in items if isinstance(i, sam.Command)]
    assert [(c.cmd, c.para, c.data) for c in cmds] == [(0x20, 0x01, b""), (0x61, 0xFF, b"P")]
    assert errors_of(items) == [SyncError]
    # LEN 3 is the minimum for commands, not for replies.
    assert errors_of(sam.ResponseParser().feed(sam.find_card_command())) == [LengthError]
    assert sam.parse_command(sam.reset_command()).cmd == 0x10


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=12), st.booleans())
def test_fuzz_never_raises(chunks, with_frames):
    parser = sam.ResponseParser()
    total = 0
    for i, chunk in enumerate(chunks):
        if with_frames and i % 2:
            chunk = chunk[:7] + SAMPLE_REPLIES[i % len(SAMPLE_REPLIES)] + chunk[7:]
        for item in parser.feed(chunk):
            assert isinstance(item, (sam.Frame, ProtocolError))
        total += len(chunk)
        assert parser.pending <= sam.MAX_FRAME
    for item in parser.close():
        assert isinstance(item, ProtocolError)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40), st.binary(max_size=40))
def test_fuzz_preamble_heavy_input(a, b):
    # Many preambles with random LEN and body bytes stress resynchronisation.
    data = a + h(PRE) + b + h(PRE) + a + SAMPLE_REPLIES[0]
    parser = sam.ResponseParser()
    items = parser.feed(data) + parser.close()
    assert all(isinstance(i, (sam.Frame, ProtocolError)) for i in items)
