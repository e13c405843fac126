"""Bridge protocol vectors and the fuzz-corpus replay, for MicroPython and CPython alike.

``micropython tests/firmware_bridge/mp_bridge_vectors.py`` prints ``OK <checks>`` and then one
line per corpus case (decoded items and counters); ``test_bridge_fuzz.py`` runs it under both
interpreters and requires identical output, and checks the lines against CPython's Decoder.
"""

import sys


def _here():
    path = __file__
    cut = path.rfind("/")
    return path[:cut] if cut > 0 else "."


def _repo_root():
    path = _here()
    for _ in range(2):
        cut = path.rfind("/")
        path = path[:cut] if cut > 0 else "."
    return path


sys.path.insert(0, _repo_root())

CHECKS = [0]


def check(cond, what):
    CHECKS[0] += 1
    assert cond, what


def h(text):
    return bytes.fromhex(text.replace(" ", ""))


def vectors(bridge):
    check(bridge.crc16(b"123456789") == 0x29B1, "crc check value")
    # COBS vectors (Cheshire & Baker): 00 -> 01 01; 11 22 00 33 -> 03 11 22 02 33
    check(bridge.cobs_encode(b"\x00") == h("01 01"), "cobs 00")
    check(bridge.cobs_encode(b"\x00\x00") == h("01 01 01"), "cobs 00 00")
    check(bridge.cobs_encode(h("11 22 00 33")) == h("03 11 22 02 33"), "cobs 1")
    check(bridge.cobs_encode(h("11 00 00 00")) == h("02 11 01 01 01"), "cobs 2")
    run = bytes(range(1, 255))  # 254 non-zero bytes: FF + 254 bytes + 01
    check(bridge.cobs_encode(run) == b"\xff" + run + b"\x01", "cobs 254")
    check(bridge.cobs_decode(b"\xff" + run + b"\x01") == run, "cobs 254 back")
    # Documented examples (docs/bridge.md, "Byte-level examples").
    table = [
        (bridge.PING, 1, h("01 02 03 04"), "03 01 02 08 01 01 02 03 04 B1 5C 00"),
        (bridge.ACK, 7, h("00 05 00 13 88"), "03 01 7F 02 07 02 05 05 13 88 A8 3B 00"),
        (bridge.RELAY, 5, h("13 88"), "03 01 20 06 05 13 88 EE 54 00"),
        (bridge.HELLO, 0, b"\x00" + b"1.0", "03 01 01 01 01 06 31 2E 30 2F A3 00"),
    ]
    for msg_type, seq, payload, want in table:
        got = bridge.encode(msg_type, seq, payload)
        check(got == h(want), "frame " + got.hex())
        m = bridge.decode(got)
        check((m.type, m.seq, m.payload) == (msg_type, seq, payload), "decode back")
    # Largest packet: 506-byte payload of 0x55 -> 512-byte packet, 515 bytes COBS + 00.
    big = bridge.encode(bridge.LOG, 0xFFFF, b"\x55" * 506)
    check(len(big) == 516 and big.find(b"\x00") == 515, "max frame size")
    try:
        bridge.encode(bridge.LOG, 0, b"\x55" * 507)
        check(False, "too large accepted")
    except ValueError:
        check(True, "too large refused")
    # Payload helpers
    check(bridge.relay_payload(5000) == h("13 88"), "relay")
    check(bridge.parse_relay(h("13 88")) == 5000, "relay back")
    check(bridge.ack_payload(7, 0, h("13 88")) == h("00 07 00 13 88"), "ack")
    check(bridge.parse_ack(h("00 07 02")) == (7, 2, b""), "ack back")
    pong = bridge.pong_payload(0x01020304, 123456, "v1")
    check(pong == h("01 02 03 04 00 01 E2 40") + b"v1", "pong")
    check(
        bridge.parse_pong(pong) == {"token": 0x01020304, "uptime_ms": 123456, "version": "v1"},
        "pong back",
    )
    ce = bridge.card_error_payload(bridge.STAGE_READ, 0x41, "read failed")
    check(ce == h("03 41") + b"read failed", "card error")
    check(bridge.parse_card_error(ce) == (3, 0x41, "read failed"), "card error back")
    check(bridge.indicate_payload(True, False, 300, 2000) == h("01 00 01 2C 07 D0"), "indicate")
    check(
        bridge.parse_indicate(h("01 00 01 2C 07 D0")) == (True, False, 300, 2000), "indicate back"
    )
    check(bridge.log_payload(bridge.INFO, "relay off") == b"\x14relay off", "log")
    card = {"name": "张三", "id_number": "11010119900307123X"}
    cp = bridge.card_payload(card, 150)
    check(cp == '{"cycle_ms":150,"id_number":"11010119900307123X","name":"张三"}'.encode(), "card")
    check(bridge.parse_card(cp)["cycle_ms"] == 150, "card back")
    long_card = {"address": "北" * 160, "authority": "局" * 15, "name": "张三"}
    lp = bridge.card_payload(long_card, 1)
    check(len(lp) <= bridge.MAX_PAYLOAD and b'"truncated":true' in lp, "card shed")
    hp = bridge.health_payload({"relay_open": False, "bridge": {"lost": 0}})
    check(hp == b'{"bridge":{"lost":0},"relay_open":false}', "health")
    check(bridge.parse_health(hp)["relay_open"] is False, "health back")
    check(len(bridge.log_payload(10, "长" * 400)) <= bridge.MAX_PAYLOAD, "log cut")
    # Peer
    p = bridge.Peer()
    check([p.next_seq(), p.next_seq()] == [0, 1], "next seq")
    m = bridge.Message
    verdicts = [
        p.accept(m(bridge.PING, 10, b"a")),
        p.accept(m(bridge.PING, 10, b"a")),
        p.accept(m(bridge.PING, 11, b"b")),
        p.accept(m(bridge.PING, 15, b"c")),
        p.accept(m(bridge.PING, 15, b"d")),
        p.accept(m(bridge.HELLO, 3, b"\x00")),
        p.accept(m(bridge.PING, 4, b"e")),
        p.accept(m(bridge.PING, 2, b"f")),
    ]
    want = ["new", "duplicate", "new", "new", "new", "new", "new", "new"]
    check(verdicts == want, "peer " + str(verdicts))
    check((p.lost, p.duplicates, p.resyncs) == (3, 1, 2), "peer counters")
    q = bridge.Peer()
    q.accept(m(bridge.PING, 65535, b""))
    check(q.accept(m(bridge.PING, 0, b"")) == "new" and q.lost == 0, "wrap")


def summary(bridge, data, chunk):
    """One line: the items Decoder returns for ``data`` fed in ``chunk``-byte pieces."""
    dec = bridge.Decoder()
    size = len(dec._buf)
    parts = []
    for i in range(0, len(data), chunk):
        for item in dec.feed(data[i : i + chunk]):
            if isinstance(item, bridge.Message):
                parts.append(f"M{item.type}/{item.seq}/{item.payload.hex()}")
            else:
                parts.append("E" + item.code)
        check(len(dec._buf) == size and dec.pending <= size, "buffer bounded")
    parts.append(f"C{dec.frames}/{dec.bad_frames}/{dec.oversized}/{dec.pending}")
    return " ".join(parts)


def replay(bridge):
    lines = []
    with open(_here() + "/corpus/bridge_decoder.hex") as f:
        cases = [line.strip() for line in f.read().split("\n") if line.strip()]
    for i, case in enumerate(cases):
        data = bytes.fromhex(case)
        chunk = 1 + (i * 37) % 97
        lines.append(summary(bridge, data, chunk))
    return lines


def main():
    from firmware_bridge import bridge

    vectors(bridge)
    lines = replay(bridge)
    print("OK " + str(CHECKS[0]))
    for line in lines:
        print(line)


main()
