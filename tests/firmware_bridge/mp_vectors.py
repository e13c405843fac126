"""Protocol vectors for the MicroPython unix port (also runs under CPython).

Plain asserts, no pytest, no typing: ``micropython tests/firmware_bridge/mp_vectors.py``
prints ``OK <number of checks>``. ``test_micropython.py`` runs it under both interpreters.
"""

import sys


def _repo_root():
    # This file is <root>/tests/firmware_bridge/mp_vectors.py; os.path is not on MicroPython.
    path = __file__
    for _ in range(3):
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


def ucs2_field(value, size):
    # Built by hand, independent of idcard.encode_text.
    out = bytearray()
    for ch in value:
        out.append(ord(ch) & 0xFF)
        out.append(ord(ch) >> 8)
    while len(out) < size:
        out.extend(b" \x00")
    return bytes(out)


def vectors_commands(sam):
    pre = "AA AA AA 96 69 "
    table = [
        (sam.reset_command(), "00 03 10 FF EC"),
        (sam.status_command(), "00 03 11 FF ED"),
        (sam.sam_id_command(), "00 03 12 FF EE"),
        (sam.find_card_command(), "00 03 20 01 22"),
        (sam.select_card_command(), "00 03 20 02 21"),
        (sam.read_base_command(), "00 03 30 01 32"),
        (sam.read_base_command(True), "00 03 30 10 23"),
        (sam.read_address_command(), "00 03 30 03 30"),
        (sam.set_baud_command(115200), "00 03 60 00 63"),
        (sam.set_baud_command(57600), "00 03 60 01 62"),
        (sam.set_baud_command(38400), "00 03 60 02 61"),
        (sam.set_baud_command(19200), "00 03 60 03 60"),
        (sam.set_baud_command(9600), "00 03 60 04 67"),
        (sam.set_rf_bytes_command(0x50), "00 04 61 FF 50 CA"),
    ]
    for got, want in table:
        check(got == h(pre + want), want)
    check(sam.build_response(0, 0, 0x90) == h(pre + "00 04 00 00 90 94"), "reset reply")
    check(
        sam.build_response(0, 0, 0x9F, bytes(4)) == h(pre + "00 08 00 00 9F 00 00 00 00 97"),
        "find reply",
    )
    check(sam.build_response(0, 0, 0x80) == h(pre + "00 04 00 00 80 84"), "no card reply")


def vectors_parser(sam, errors):
    text = bytes(range(256))
    photo = bytes(1024)
    finger = b"\x01" * 1024
    frames = [
        sam.build_response(0, 0, 0x90),
        sam.build_response(0, 0, 0x9F, bytes(4)),
        sam.build_response(0, 0, 0x90, bytes(range(8))),
        sam.build_response(0, 0, 0x90, sam.read_base_data(text, photo, finger)),
        sam.build_response(0, 0, 0x80),
    ]
    stream = b"".join(frames)
    check(len(frames[3]) == 2321, "largest frame")
    for step in (1, 3, 7, 64, 1000, 5000):
        p = sam.ResponseParser()
        got = []
        for i in range(0, len(stream), step):
            got.extend(p.feed(stream[i : i + step]))
        check([f.raw for f in got] == frames, "chunking " + str(step))
    bad = bytearray(frames[1])
    bad[-1] ^= 1
    p = sam.ResponseParser()
    items = p.feed(b"\x01\x02" + bytes(bad) + frames[0]) + p.close()
    kinds = [type(i).__name__ for i in items]
    check(kinds == ["SyncError", "ChecksumError", "Frame"], "resync " + str(kinds))
    check(isinstance(items[1], errors.ProtocolError), "error base")
    check(p.garbage_bytes == 2 + len(bad), "garbage count")
    t, ph, fi = sam.parse_read_base(sam.parse_frame(frames[3]))
    check(t == text and ph == photo and fi == finger, "read base 30 10")
    data = sam.read_base_data(text, photo)
    check(sam.parse_read_base(data) == (text, photo, None), "read base 30 01")
    try:
        sam.parse_read_base(data[:-1])
        check(False, "length error expected")
    except errors.LengthError:
        check(True, "length error")


def vectors_idcard(idcard):
    number = "11010519491231002X"
    check(idcard.gb11643_check_char(number[:17]) == "X", "check char X")
    check(idcard.id_checksum_ok(number), "valid id")
    check(not idcard.id_checksum_ok("110105194912310021"), "invalid id")
    check(not idcard.id_checksum_ok("12"), "short id")
    check(idcard.mask_id("110101199003071234") == "1101**********1234", "mask")
    raw = (
        ucs2_field("张三", 30)
        + ucs2_field("0", 2)
        + ucs2_field("01", 4)
        + ucs2_field("19491231", 16)
        + ucs2_field("北京市", 70)
        + ucs2_field(number, 36)
        + ucs2_field("北京市公安局", 30)
        + ucs2_field("20100101", 16)
        + ucs2_field("长期", 16)
        + ucs2_field("", 36)
    )
    check(len(raw) == 256, "layout size")
    card = idcard.decode_text(raw)
    check(card["card_type"] == "resident", "kind")
    check(card["name"] == "张三", "name")
    check(card["sex_text"] == "未知", "sex 0 is unknown")
    check(card["nation_text"] == "汉", "nation")
    check(card["birth"] == "1949-12-31", "birth")
    check(card["valid_to"] == "长期", "long term")
    check(card["id_checksum_ok"] is True, "checksum ok")
    check(idcard.encode_text(card) == raw, "encode inverse")
    raw_i = (
        ucs2_field("DOE, JANE", 120)
        + ucs2_field("2", 2)
        + ucs2_field("CAN310000000001", 30)
        + ucs2_field("CAN", 6)
        + ucs2_field("", 30)
        + ucs2_field("20200101", 16)
        + ucs2_field("20300101", 16)
        + ucs2_field("19900101", 16)
        + ucs2_field("10", 4)
        + ucs2_field("3100", 8)
        + ucs2_field("I", 2)
        + ucs2_field("", 6)
    )
    card = idcard.decode_text(raw_i)
    check(card["card_type"] == "I" and card["name"] == "DOE, JANE", "I card")
    check(card["id_number"] == "CAN310000000001" and card["id_checksum_ok"] is None, "I id")
    check(idcard.encode_text(card) == raw_i, "I inverse")


def vectors_json(jsonenc):
    check(
        jsonenc.dumps({"b": [1, True, None], "a": "长期"}) == '{"a":"长期","b":[1,true,null]}', "j1"
    )
    check(jsonenc.dumps('"\\\n\x01') == '"\\"\\\\\\n\\u0001"', "j2")


def vectors_samsim(sam, samsim, idcard):
    sim = samsim.SimulatedSam()
    sim.place("long_term")
    p = sam.ResponseParser()
    sw = []
    card = None
    for cmd in (
        sam.reset_command(),
        sam.status_command(),
        sam.find_card_command(),
        sam.select_card_command(),
        sam.read_base_command(),
        sam.find_card_command(),
    ):
        for f in p.feed(sim.feed(cmd)):
            sw.append(f.sw3)
            if len(f.data) > 256:
                card = idcard.decode_text(sam.parse_read_base(f)[0])
    check(sw == [0x90, 0x90, 0x9F, 0x90, 0x90, 0x80], f"sequence {sw!r}")
    check(card is not None and card["valid_to"] == "长期", "card read")
    for sample in samsim.SAMPLE_CARDS.values():
        check(samsim.card_problems(sample) == [], "sample card is valid")
    check(samsim.card_problems({"nmae": "x"}) == [("nmae", "unknown field")], "cards typo")
    check(samsim.card_problems({"card_type": "J", "nation": "01"})[0][0] == "nation", "J nation")


def vectors_decode(decode):
    lines = list(decode.decode_stream("AA AA AA 96 69 00 04 00 00 90 94 zz"))
    check(lines[0]["status"] == "90" and lines[0]["length"] == 11, "decode frame")
    check(lines[1]["error"] == "hex", "decode hex error")


def main():
    from firmware_bridge import decode, errors, idcard, jsonenc, sam, samsim

    vectors_commands(sam)
    vectors_parser(sam, errors)
    vectors_idcard(idcard)
    vectors_json(jsonenc)
    vectors_samsim(sam, samsim, idcard)
    vectors_decode(decode)
    print("OK " + str(CHECKS[0]))


main()
