"""The decode tool: hex frames in, JSON lines out, in-process and as ``python -m``."""

import io
import itertools
import json
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge import decode, idcard, sam
from firmware_bridge.samsim import FINGER_FILLER, PHOTO_FILLER, SAMPLE_CARDS

ROOT = Path(__file__).resolve().parents[2]


def spaced_hex(raw: bytes) -> str:
    return " ".join(f"{b:02X}" for b in raw)


def read_reply(card: dict, finger: bool = False) -> bytes:
    data = sam.read_base_data(
        idcard.encode_text(card), PHOTO_FILLER, FINGER_FILLER if finger else None
    )
    return sam.build_response(0, 0, 0x90, data)


FIND_OK = sam.build_response(0, 0, 0x9F, bytes(4))
NO_CARD = sam.build_response(0, 0, 0x80)
SELECT_OK = sam.build_response(0, 0, 0x90, bytes.fromhex("0102030405060708"))
BAD_CHECKSUM = sam.build_response(0x12, 0x34, 0x90)[:-1] + b"\x00"


def mixed_input() -> str:
    """Several frames, one bad, a non-hex token, and a truncated frame at the end."""
    parts = [
        spaced_hex(FIND_OK),
        "0x" + SELECT_OK.hex(),  # one token with a 0x prefix
        spaced_hex(read_reply(SAMPLE_CARDS["long_term"])),
        spaced_hex(BAD_CHECKSUM),
        spaced_hex(read_reply(SAMPLE_CARDS["foreigner_y"], finger=True)),
        "\n\n" + spaced_hex(NO_CARD),
        "XYZ",
        spaced_hex(read_reply(SAMPLE_CARDS["permit_j"])),
        spaced_hex(FIND_OK[:9]),
    ]
    return "\n".join(parts) + "\n"


def run_main(text: str) -> tuple[int, list[dict]]:
    out = io.StringIO()
    code = decode.main(io.StringIO(text), out)
    return code, [json.loads(line) for line in out.getvalue().splitlines()]


def test_good_frames_exit_zero():
    code, objs = run_main(spaced_hex(FIND_OK) + "\n" + spaced_hex(NO_CARD))
    assert code == 0
    assert objs == [
        {
            "status": "9F",
            "status_text": "find card success",
            "sw1": "00",
            "sw2": "00",
            "length": 15,
            "data_len": 4,
            "data": "00000000",
        },
        {
            "status": "80",
            "status_text": "no card (find failed)",
            "sw1": "00",
            "sw2": "00",
            "length": 11,
            "data_len": 0,
        },
    ]


def test_mixed_input_reports_errors_and_continues():
    code, objs = run_main(mixed_input())
    assert code == 1
    assert [o.get("status", o.get("error")) for o in objs] == [
        "9F",
        "90",
        "90",
        "checksum",
        "90",
        "80",
        "hex",
        "90",
        "truncated",
    ]
    assert objs[1]["data"] == "0102030405060708"
    card = objs[2]["card"]
    assert card["name"] == "李四" and card["valid_to"] == "长期"
    assert card["photo_bytes"] == 1024 and "finger_bytes" not in card
    assert "data" not in objs[2]
    y = objs[4]["card"]
    assert y["card_type"] == "Y" and y["finger_bytes"] == 1024
    assert objs[4]["length"] == 2321
    assert "XYZ" in objs[6]["detail"]
    assert objs[7]["card"]["card_type"] == "J"
    assert set(objs[3]) == {"error", "detail"}


def test_card_fields_match_decode_text():
    code, objs = run_main(spaced_hex(read_reply(SAMPLE_CARDS["resident"])))
    assert code == 0
    expected = idcard.decode_text(idcard.encode_text(SAMPLE_CARDS["resident"]))
    expected["photo_bytes"] = 1024
    assert objs[0]["card"] == expected
    assert objs[0]["length"] == 1295


def test_garbage_and_odd_digits():
    code, objs = run_main("DE AD " + spaced_hex(NO_CARD) + " A")
    assert code == 1
    assert [o.get("error", o.get("status")) for o in objs] == ["garbage", "80", "hex"]


def test_whitespace_inside_bytes_and_empty_input():
    assert run_main(" ".join(NO_CARD.hex()))[1][0]["status"] == "80"
    assert run_main("") == (0, [])


def test_broken_text_in_a_read_reply():
    text = bytearray(idcard.encode_text(SAMPLE_CARDS["resident"]))
    text[0:2] = b"\x00\xd8"
    raw = sam.build_response(0, 0, 0x90, sam.read_base_data(bytes(text), PHOTO_FILLER))
    code, objs = run_main(raw.hex())
    assert code == 1 and objs[0]["error"] == "text"


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(mixed_input())), max_size=10))
def test_decode_stream_is_chunking_independent(cuts):
    text = mixed_input()
    bounds = [0, *sorted(cuts), len(text)]
    chunks = [text[a:b].encode() for a, b in itertools.pairwise(bounds)]
    assert list(decode.decode_stream(chunks)) == list(decode.decode_stream(text))


def test_python_dash_m(tmp_path):
    src = tmp_path / "frames.hex"
    src.write_text(mixed_input())
    with src.open("rb") as stdin:
        proc = subprocess.run(
            [sys.executable, "-m", "firmware_bridge", "decode"],
            stdin=stdin,
            capture_output=True,
            cwd=ROOT,
            timeout=30,
            env={"PYTHONIOENCODING": "ascii", "PATH": "/usr/bin:/bin"},
        )
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.decode("utf-8").splitlines()
    assert len(lines) == 9
    assert "李四" in lines[2]  # raw UTF-8 even with an ASCII locale


def test_unknown_verb_is_usage_error():
    proc = subprocess.run(
        [sys.executable, "-m", "firmware_bridge", "nope"],
        capture_output=True,
        cwd=ROOT,
        timeout=30,
    )
    assert proc.returncode == 2
    assert b"decode" in proc.stderr
