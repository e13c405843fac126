"""The simulated SAM module: host sequence, one tap per presence, fault knobs."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge import idcard, sam
from firmware_bridge.samsim import SAMPLE_CARDS, SimulatedSam, chip_serial


def exchange(sim: SimulatedSam, command: bytes) -> sam.Frame:
    reply = sim.handle(command)
    assert reply is not None
    return sam.parse_frame(reply)


def read_card(sim: SimulatedSam, finger: bool = False):
    """The host sequence's loop body: find until 9F, select, read."""
    if exchange(sim, sam.find_card_command()).sw3 != 0x9F:
        return None
    selected = exchange(sim, sam.select_card_command())
    assert selected.sw3 == 0x90
    reply = exchange(sim, sam.read_base_command(finger))
    if reply.sw3 != 0x90:
        return reply.sw3
    text, photo, fingerprint = sam.parse_read_base(reply)
    assert len(photo) == 1024
    assert (fingerprint is not None) == finger
    return idcard.decode_text(text)


@pytest.mark.parametrize("name", sorted(SAMPLE_CARDS))
def test_full_host_sequence(name):
    sim = SimulatedSam()
    assert exchange(sim, sam.reset_command()).raw == sam.build_response(0, 0, 0x90)
    assert exchange(sim, sam.status_command()).sw3 == 0x90
    assert sam.format_sam_id(exchange(sim, sam.sam_id_command()).data).startswith("05.01-")
    assert exchange(sim, sam.find_card_command()).sw3 == 0x80
    sim.place(name)
    found = exchange(sim, sam.find_card_command())
    assert found.raw == bytes.fromhex("AAAAAA9669 0008 00009F 00000000 97")
    select = exchange(sim, sam.select_card_command())
    assert sam.parse_select(select) == chip_serial(SAMPLE_CARDS[name])
    reply = exchange(sim, sam.read_base_command(finger=name.startswith("foreigner")))
    text, _photo, _finger = sam.parse_read_base(reply)
    card = idcard.decode_text(text)
    for key, value in SAMPLE_CARDS[name].items():
        assert card[key] == value
    assert card["id_checksum_ok"] in (True, None)


def test_read_replies_have_the_sheet_sizes():
    sim = SimulatedSam()
    sim.place("resident")
    exchange(sim, sam.find_card_command())
    exchange(sim, sam.select_card_command())
    assert len(sim.handle(sam.read_base_command())) == 1295
    assert len(sim.handle(sam.read_base_command(True))) == 2321


def test_one_tap_per_presence():
    sim = SimulatedSam()
    sim.place("resident")
    assert isinstance(read_card(sim), dict)
    for _ in range(3):
        assert exchange(sim, sam.find_card_command()).sw3 == 0x80
        assert exchange(sim, sam.select_card_command()).sw3 == 0x81
    sim.remove()
    assert read_card(sim) is None
    sim.place(SAMPLE_CARDS["permit_j"])
    assert read_card(sim)["card_type"] == "J"
    assert read_card(sim) is None


def test_find_repeats_until_read():
    sim = SimulatedSam()
    sim.place("resident")
    assert exchange(sim, sam.find_card_command()).sw3 == 0x9F
    assert exchange(sim, sam.find_card_command()).sw3 == 0x9F
    assert isinstance(read_card(sim), dict)


def test_select_and_read_need_the_previous_step():
    sim = SimulatedSam()
    sim.place("resident")
    assert exchange(sim, sam.select_card_command()).sw3 == 0x81
    assert exchange(sim, sam.read_base_command()).sw3 == 0x41


def test_fail_read_next_leaves_the_card_unread():
    sim = SimulatedSam()
    sim.place("resident")
    sim.fail_read_next = True
    assert read_card(sim) == 0x41
    assert sim.fail_read_next is False
    assert isinstance(read_card(sim), dict)


def test_corrupt_next_breaks_one_checksum():
    sim = SimulatedSam()
    sim.corrupt_next = True
    parser = sam.ResponseParser()
    items = parser.feed(sim.handle(sam.reset_command()) + sim.handle(sam.reset_command()))
    assert [type(i).__name__ for i in items] == ["ChecksumError", "Frame"]


def test_mute_and_self_test_knobs():
    sim = SimulatedSam()
    sim.mute_next = True
    assert sim.handle(sam.status_command()) is None
    sim.self_test_failed = True
    assert exchange(sim, sam.status_command()).sw3 == 0x60
    assert sim.history[-2:] == [(0x11, 0xFF, None), (0x11, 0xFF, 0x60)]


def test_host_frame_errors():
    sim = SimulatedSam()
    bad = bytearray(sam.find_card_command())
    bad[-1] ^= 1
    assert exchange(sim, bytes(bad)).sw3 == 0x10
    assert exchange(sim, sam.find_card_command()[:-1]).sw3 == 0x11
    assert exchange(sim, bytes.fromhex("AAAAAA9669 0002 20 22")).sw3 == 0x11
    assert exchange(sim, sam.build_command(0x77, 0x01)).sw3 == 0x21
    assert exchange(sim, sam.build_command(0x60, 0x05)).sw3 == 0x21
    assert exchange(sim, sam.build_command(0x61, 0xFF, b"\x10")).sw3 == 0x21
    assert sim.handle(b"\x00\x01garbage") is None


def test_settings_commands():
    sim = SimulatedSam()
    assert exchange(sim, sam.set_baud_command(9600)).sw3 == 0x90
    assert sim.baud == 9600
    assert exchange(sim, sam.set_rf_bytes_command(0x50)).sw3 == 0x90
    assert sim.rf_bytes == 0x50


def test_read_address():
    sim = SimulatedSam()
    sim.place("resident")
    read_card(sim)
    assert exchange(sim, sam.read_address_command()).sw3 == 0x91
    sim.place(dict(SAMPLE_CARDS["resident"], new_address="北京市西城区1号"))
    read_card(sim)
    reply = exchange(sim, sam.read_address_command())
    assert reply.sw3 == 0x90
    assert idcard.decode_address(reply.data) == "北京市西城区1号"


def test_place_rejects_unencodable_card():
    sim = SimulatedSam()
    with pytest.raises(ValueError):
        sim.place(dict(SAMPLE_CARDS["resident"], name="名" * 20))
    with pytest.raises(KeyError):
        sim.place("nobody")
    assert not sim.present


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=20))
def test_stream_feed_with_any_chunking(sizes):
    sim = SimulatedSam()
    sim.place("long_term")
    stream = b"\x00\xff" + b"".join(
        (
            sam.reset_command(),
            sam.find_card_command(),
            sam.select_card_command(),
            sam.read_base_command(),
        )
    )
    out = b""
    pos = 0
    i = 0
    while pos < len(stream):
        n = sizes[i % len(sizes)]
        out += sim.feed(stream[pos : pos + n])
        pos += n
        i += 1
    parser = sam.ResponseParser()
    frames = parser.feed(out) + parser.close()
    assert [f.sw3 for f in frames] == [0x90, 0x9F, 0x90, 0x90]
    card = idcard.decode_text(sam.parse_read_base(frames[-1])[0])
    assert card["valid_to"] == "长期"
