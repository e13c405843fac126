"""Bridge framing against independent references (binascii CRC, the documented bytes)."""

from __future__ import annotations

import binascii
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from firmware_bridge import bridge

DOC = Path(__file__).resolve().parents[2] / "docs" / "bridge.md"


@given(st.binary(max_size=600))
def test_crc_matches_binascii(data: bytes) -> None:
    assert bridge.crc16(data) == binascii.crc_hqx(data, 0xFFFF)


@given(st.binary(max_size=1200))
def test_cobs_roundtrip_has_no_zero(data: bytes) -> None:
    enc = bridge.cobs_encode(data)
    assert b"\x00" not in enc and len(enc) <= len(data) + len(data) // 254 + 1
    assert bridge.cobs_decode(enc) == data


def test_documented_wire_bytes() -> None:
    text = DOC.read_text(encoding="utf-8")
    for msg_type, seq, payload in [
        (bridge.PING, 1, bytes.fromhex("01020304")),
        (bridge.RELAY, 5, bridge.relay_payload(5000)),
        (bridge.ACK, 7, bridge.ack_payload(5, 0, bridge.relay_payload(5000))),
        (bridge.HELLO, 0, bridge.hello_payload(0, "1.0")),
    ]:
        wire = bridge.encode(msg_type, seq, payload).hex(" ").upper()
        assert "wire    " + wire in text
