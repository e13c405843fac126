"""Fuzzing the bridge Decoder (hypothesis) and replaying a saved corpus under MicroPython.

The corpus (``corpus/bridge_decoder.hex``, one case a line) is built by ``build_corpus()``
from a fixed seed: good frames, garbage, flipped bits, cuts, oversized runs and frames
interleaved with each other. Run ``python tests/firmware_bridge/test_bridge_fuzz.py`` to
rewrite it; the test checks the file is exactly what the builder makes.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge import bridge

CORPUS = Path(__file__).with_name("corpus") / "bridge_decoder.hex"
SCRIPT = Path(__file__).with_name("mp_bridge_vectors.py")
TYPES = sorted(bridge.TYPE_NAMES)


def _frame(rng: random.Random) -> bytes:
    n = rng.choice([0, 1, 2, 4, 6, 50, 253, 254, 255, 300, 506])
    payload = bytes(rng.choice([0, 0, rng.randrange(256)]) for _ in range(n))
    frame: bytes = bridge.encode(rng.choice(TYPES), rng.randrange(65536), payload)
    return frame


def _mutate(rng: random.Random, frame: bytes) -> bytes:
    kind = rng.randrange(6)
    b = bytearray(frame)
    if kind == 0:  # flip a bit
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    elif kind == 1:  # truncate, keep the delimiter
        cut = rng.randrange(1, len(b))
        b = b[:cut] + b"\x00"
    elif kind == 2:  # drop a byte
        del b[rng.randrange(len(b) - 1)]
    elif kind == 3:  # insert a byte
        b.insert(rng.randrange(len(b)), rng.randrange(256))
    elif kind == 4:  # lose the delimiter: runs into the next frame
        b = b[:-1]
    else:  # interleave: half of this one, then a whole other frame, then the rest
        other = _frame(rng)
        cut = rng.randrange(1, len(b))
        b = b[:cut] + other + b[cut:]
    return bytes(b)


def build_corpus(count: int = 200, seed: int = 20240601) -> list[bytes]:
    rng = random.Random(seed)
    cases = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(1, 6)):
            roll = rng.random()
            if roll < 0.35:
                parts.append(_frame(rng))
            elif roll < 0.7:
                parts.append(_mutate(rng, _frame(rng)))
            elif roll < 0.85:
                parts.append(bytes(rng.randrange(256) for _ in range(rng.randint(1, 64))))
            else:  # oversized: a long run without a delimiter
                parts.append(bytes(rng.randrange(1, 256) for _ in range(rng.randint(500, 1200))))
        cases.append(b"".join(parts))
    return cases


def write_corpus() -> None:
    CORPUS.parent.mkdir(exist_ok=True)
    CORPUS.write_text("".join(c.hex() + "\n" for c in build_corpus()))


def micropython() -> str:
    from .test_micropython import micropython_binary

    return micropython_binary()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=700), max_size=8), st.integers(1, 64))
def test_decoder_never_raises_never_grows(chunks: list[bytes], step: int) -> None:
    dec = bridge.Decoder()
    sizes = (len(dec._buf), len(dec._pkt))
    data = b"".join(chunks)
    items = []
    for i in range(0, len(data), step):
        items += dec.feed(data[i : i + step])
        assert (len(dec._buf), len(dec._pkt)) == sizes
        assert dec.pending <= bridge.MAX_ENCODED
    for item in items:
        assert isinstance(item, bridge.Message | bridge.BridgeError)
    bad = sum(isinstance(i, bridge.BadFrame) for i in items)
    over = sum(isinstance(i, bridge.Oversized) for i in items)
    good = sum(isinstance(i, bridge.Message) for i in items)
    assert (dec.bad_frames, dec.oversized, dec.frames) == (bad, over, good)


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=1500),
    st.integers(0, 255),
    st.integers(0, 65535),
    st.binary(max_size=bridge.MAX_PAYLOAD),
    st.integers(1, 700),
)
def test_good_frame_after_garbage_is_decoded(
    garbage: bytes, msg_type: int, seq: int, payload: bytes, step: int
) -> None:
    dec = bridge.Decoder()
    data = garbage + b"\x00" + bridge.encode(msg_type, seq, payload)
    items = []
    for i in range(0, len(data), step):
        items += dec.feed(data[i : i + step])
    assert items[-1] == bridge.Message(msg_type, seq, payload)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 255), st.integers(0, 65535), st.binary(max_size=bridge.MAX_PAYLOAD))
def test_encode_decode_roundtrip(msg_type: int, seq: int, payload: bytes) -> None:
    frame = bridge.encode(msg_type, seq, payload)
    assert frame.index(b"\x00") == len(frame) - 1
    assert len(frame) <= bridge.MAX_ENCODED + 1
    assert bridge.decode(frame) == bridge.Message(msg_type, seq, payload)


def test_corpus_is_the_builders() -> None:
    lines = CORPUS.read_text().split()
    assert len(lines) == 200
    assert [bytes.fromhex(x) for x in lines] == build_corpus()
    kinds = set()
    for case in build_corpus():
        dec = bridge.Decoder()
        for item in dec.feed(case):
            kinds.add(type(item).__name__)
    assert {"Message", "BadCrc", "BadCobs", "Oversized", "ShortFrame"} <= kinds


@pytest.mark.micropython
def test_corpus_replay_identical_on_micropython() -> None:
    mp = subprocess.run([micropython(), str(SCRIPT)], capture_output=True, timeout=50)
    cp = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, timeout=50)
    assert mp.returncode == 0, mp.stdout[-2000:] + mp.stderr
    assert cp.returncode == 0, cp.stderr
    assert mp.stdout == cp.stdout
    lines = cp.stdout.decode().splitlines()
    assert lines[0].startswith("OK ") and int(lines[0].split()[1]) > 200
    # Independent of the script: the same cases through this process's Decoder, in one feed.
    assert len(lines) == 201
    for case, line in zip(build_corpus(), lines[1:], strict=True):
        dec = bridge.Decoder()
        items = dec.feed(case)
        codes = ["M" if isinstance(i, bridge.Message) else "E" + i.code for i in items]
        assert [p[0] if p[0] == "M" else p for p in line.split()[:-1]] == codes
        assert line.split()[-1] == f"C{dec.frames}/{dec.bad_frames}/{dec.oversized}/{dec.pending}"


if __name__ == "__main__":
    write_corpus()
