"""QR decoding, payload rules, dedupe, the QrScanner source and `kiosk camera scan`."""

from __future__ import annotations

import argparse
import io
import json
import logging
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.sources.camera import Frame, MockCamera
from device.sources.camera_cli import register, scan
from device.sources.credentials import Credential
from device.sources.qrscan import CodeFilter, QrDecoder, QrScanner, token_digest
from tests.device import qrframes as qf


@pytest.fixture(scope="session")
def sequence() -> qf.FrameSequence:
    return qf.default_sequence()


@pytest.fixture(scope="session")
def sequence_video(tmp_path_factory: pytest.TempPathFactory, sequence: qf.FrameSequence) -> Path:
    return qf.write_video(sequence.frames, tmp_path_factory.mktemp("video") / "seq.avi")


def held(shot: qf.Shot, n: int) -> list[np.ndarray]:
    """`n` frames of a code held still (each with its own sensor noise)."""
    return [qf.code_frame(shot, index=i) for i in range(n)]


@pytest.mark.parametrize("distortion", list(qf.DISTORTIONS))
def test_every_distortion_class_is_decoded(distortion: str) -> None:
    payload = qf.token(100 + list(qf.DISTORTIONS).index(distortion))
    dec = QrDecoder()
    found = []
    for i, image in enumerate(held(qf.shot(distortion, payload), 6)):  # 0.2 s held in view
        found += [d.data for d in dec.decode(image, i / 30)]
    assert found, f"{distortion}: nothing decoded in 6 frames"
    assert set(found) == {payload.encode()}


def test_inverted_code_needs_the_inverted_pass() -> None:
    """Sanity check of the generator: zbar alone does not read light-on-dark codes."""
    from pyzbar import pyzbar

    image = qf.code_frame(qf.shot("inverted", qf.token(1)))
    assert pyzbar.decode(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)) == []
    dec = QrDecoder(try_inverted=False, backend="pyzbar")
    assert not any(dec.decode(image, i / 30) for i in range(6))
    dec = QrDecoder(backend="pyzbar")
    assert any(dec.decode(image, i / 30) for i in range(6))


def test_zxing_reads_inverted_codes_without_a_variant() -> None:
    image = qf.code_frame(qf.shot("inverted", qf.token(2)))
    dec = QrDecoder(try_inverted=False)
    assert dec.backends[0].name == "zxing-cpp"
    found = dec.decode(image, 0.0)
    assert [d.data for d in found] == [qf.token(2).encode()]


def test_sequence_gives_one_code_per_shot_with_less_work(sequence: qf.FrameSequence) -> None:
    scanner = QrScanner(MockCamera([]))
    accepted = []
    for i, image in enumerate(sequence.frames):
        accepted += scanner.process(Frame(i, image, i / sequence.fps, 0.0))
    assert [a.text for a in accepted] == [s.payload for s in sequence.shown]
    for acc, shown in zip(accepted, sequence.shown, strict=True):
        assert shown.first - 10 <= acc.frame <= shown.last  # during slide-in or hold
    stats = scanner.decoder.stats
    # zxing-cpp reads every analysed frame whole (so no code hides another), not the skipped
    # ones; zbar, ten times dearer per pixel, reads far less than naive decoding would
    naive_pixels = len(sequence.frames) * 640 * 480
    assert stats["skipped"] > 100 and stats["zxing-cpp_pixels"] < naive_pixels, dict(stats)
    assert stats["pyzbar_pixels"] < naive_pixels / 10, dict(stats)
    assert stats["skipped"] > 50  # idle frames are skipped
    assert scanner.filter.duplicates > 300  # the held frames were decoded, then deduplicated


def test_static_background_is_not_decoded_over_and_over() -> None:
    dec = QrDecoder()
    for i in range(30):  # no background yet: the sign is a candidate, retried a few frames
        assert dec.decode(qf.idle_frame(index=i), i / 30) == []
    regions = dec.stats["region_frames"]
    assert regions <= dec.retry_frames + 1
    before = dict(dec.stats)
    for i in range(30, 150):  # 4 s more of the same wall
        assert dec.decode(qf.idle_frame(index=i), i / 30) == []
    after = dec.stats
    assert after["region_frames"] == regions, dict(after)  # the sign is background now
    assert after["skipped"] - before["skipped"] >= 100
    # what is left is the steady full-frame check: one cheap pass per analysed frame, the
    # fallback once every full_frame_interval_s
    analysed = after["analysed"] - before["analysed"]
    assert after["zxing-cpp_calls"] - before["zxing-cpp_calls"] == analysed
    assert after["pyzbar_calls"] - before["pyzbar_calls"] <= 4 / dec.full_frame_interval_s + 1


# -- payload rules and dedupe ----------------------------------------------------------------


def test_dedupe_window_counts_from_last_seen() -> None:
    f = CodeFilter(dedupe_s=3.0)
    assert f.check(b"SHY1.a", 0.0) == ("SHY1.a", "accepted")
    for t in np.arange(0.1, 5.0, 1 / 30):  # held in view for 5 s: still one credential
        assert f.check(b"SHY1.a", float(t))[1] == "duplicate"
    assert f.check(b"SHY1.b", 5.0)[1] == "accepted"  # another code is not a duplicate
    assert f.check(b"SHY1.a", 7.9)[1] == "duplicate"  # 2.9 s after last seen
    assert f.check(b"SHY1.a", 11.0)[1] == "accepted"  # 3.1 s after last seen
    assert f.accepted == 3


def test_dedupe_window_is_configurable() -> None:
    f = CodeFilter(dedupe_s=0.5)
    assert f.check(b"x", 0.0)[1] == "accepted"
    assert f.check(b"x", 0.4)[1] == "duplicate"
    assert f.check(b"x", 1.0)[1] == "accepted"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\xff\xfe\x00", "not_utf8"),
        (b"abc\x00def", "not_printable"),
        (b"line\nbreak", "not_printable"),
        (b"x" * 1025, "too_long"),
    ],
)
def test_garbage_payloads_are_counted_and_dropped(data: bytes, reason: str) -> None:
    f = CodeFilter()
    assert f.check(data, 0.0) == (None, reason)
    assert f.check(data, 0.1) == (None, "duplicate")  # one bad code held in view: counted once
    assert f.rejected == {reason: 1}
    assert f.accepted == 0


def test_payload_limits_accept_unicode_and_the_bound() -> None:
    f = CodeFilter(max_payload=12)
    assert f.check("绿码通行".encode(), 0.0) == ("绿码通行", "accepted")  # 12 bytes
    assert f.check("绿码通行!".encode(), 0.0) == (None, "too_long")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_filter_never_raises(data: bytes) -> None:
    text, why = CodeFilter().check(data, 0.0)
    assert (text is None) == (why != "accepted")
    if text is not None:
        assert text.isprintable() and len(data) <= 1024


def test_garbage_codes_in_frames_are_dropped(caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(5)
    junk = qf.shot("plain", rng.bytes(40), size=200, angle=0.0)
    long = qf.shot("plain", "L" * 1100, size=440, angle=0.0, error="l")
    good = qf.shot("plain", qf.token(7))
    scanner = QrScanner(MockCamera([]))
    events: list[tuple[str, dict[str, object]]] = []
    scanner._on_event = lambda what, detail: events.append((what, detail))
    accepted = []
    t = 0.0
    with caplog.at_level(logging.DEBUG):
        for s in (junk, long, good):
            for i, image in enumerate(held(s, 4)):
                accepted += scanner.process(Frame(i, image, t, 0.0))
                t += 1 / 30
            t += 5.0  # out of the dedupe window
    assert [a.text for a in accepted] == [qf.token(7)]
    # zxing-cpp hands binary content over as bytes (not UTF-8); zbar guesses a charset first
    # (then control characters make it not printable): refused either way, once each
    rejected = dict(scanner.filter.rejected)
    assert rejected.pop("too_long") == 1
    assert rejected in ({"not_utf8": 1}, {"not_printable": 1})
    assert [e[0] for e in events] == ["qr_rejected", "qr_rejected"]
    assert events[1][1] == {"reason": "too_long", "length": 1100}
    assert qf.token(7) not in caplog.text  # the token is never logged in full
    assert token_digest(qf.token(7)) in caplog.text


# -- the credential source -------------------------------------------------------------------


def test_scanner_emits_one_credential_per_code_held_in_view() -> None:
    shots = [qf.shot("plain", qf.token(1)), qf.shot("tilt", qf.token(2), hold_frames=45)]
    seq = qf.make_sequence(shots, idle_frames=10)
    cam = MockCamera(seq.frames, fps=300, live=False)  # a file: every frame decoded
    scanner = QrScanner(cam)
    got: list[Credential] = []
    events: list[str] = []
    before = time.monotonic()
    scanner.start(got.append, lambda what, detail: events.append(what))
    try:
        assert scanner.join(timeout=20)
    finally:
        scanner.stop()
    assert [c.token for c in got] == [qf.token(1), qf.token(2)]
    for c in got:
        assert (c.kind, c.source, c.id_number) == ("qr", "camera", "")
        assert before < c.completed_at <= time.monotonic()
        assert c.token not in repr(c)
    assert events == ["camera_ready", "camera_ended"]
    health = scanner.health()
    assert health["codes"] == 2 and health["frames"] == len(seq.frames)
    assert health["decoded_frames"] == len(seq.frames) and health["drops"] == 0
    for key in ("fps", "drops", "restarts", "last_frame_age_s", "decode_fps", "avg_decode_ms"):
        assert key in health


def test_scanner_on_a_live_camera_at_30_fps_reports_a_stall() -> None:
    seq = qf.make_sequence([qf.shot("plain", qf.token(3))], idle_frames=5)
    cam = MockCamera(seq.frames, fps=30, live=True)  # runs out: a camera that stops
    scanner = QrScanner(cam, stall_s=0.4, reopen_interval_s=0.05)
    got: list[Credential] = []
    events: list[str] = []
    lost = threading.Event()

    def on_event(what: str, detail: dict[str, object]) -> None:
        events.append(what)
        if what == "camera_lost":
            lost.set()

    scanner.start(got.append, on_event)
    try:
        assert lost.wait(timeout=10)
        assert scanner.health()["restarts"] >= 1
        assert not scanner.connected
    finally:
        scanner.stop()
    assert [c.token for c in got] == [qf.token(3)]
    assert events[:2] == ["camera_ready", "camera_lost"]


# -- kiosk camera scan -----------------------------------------------------------------------


def test_camera_scan_prints_one_json_line_per_code(
    sequence: qf.FrameSequence, sequence_video: Path
) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert scan(str(sequence_video), out=out, err=err) == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [x["data"] for x in lines] == [s.payload for s in sequence.shown]
    for line, shown in zip(lines, sequence.shown, strict=True):
        assert set(line) == {"frame", "data", "decode_ms"}
        assert shown.first - 10 <= line["frame"] <= shown.last
        assert 0 < line["decode_ms"] < 1000
    assert f'"frames": {len(sequence.frames)}' in err.getvalue()


def test_camera_scan_through_the_parser(sequence_video: Path) -> None:
    parser = argparse.ArgumentParser(prog="kiosk")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["camera", "scan", str(sequence_video), "--max-frames", "100"])
    assert (args.dedupe, args.max_frames) == (3.0, 100)
    out = io.StringIO()
    assert scan(args.source, dedupe_s=args.dedupe, max_frames=args.max_frames, out=out) == 0
    assert len(out.getvalue().splitlines()) == 2  # frames 0-99 hold the first two codes
    assert args.func.__name__ == "_scan"


def test_camera_scan_dedupe_option(tmp_path: Path) -> None:
    # The same code shown twice, 2 s apart (video time): one line with a 3 s window, two with 1 s.
    s = qf.shot("plain", qf.token(9))
    seq = qf.make_sequence([s, s], idle_frames=60)
    video = qf.write_video(seq.frames, tmp_path / "twice.avi")
    out3, out1 = io.StringIO(), io.StringIO()
    assert scan(str(video), dedupe_s=3.0, out=out3, err=io.StringIO()) == 0
    assert scan(str(video), dedupe_s=1.0, out=out1, err=io.StringIO()) == 0
    assert len(out3.getvalue().splitlines()) == 1
    assert len(out1.getvalue().splitlines()) == 2


def test_camera_scan_missing_source(tmp_path: Path) -> None:
    err = io.StringIO()
    assert scan(str(tmp_path / "nope.avi"), out=io.StringIO(), err=err) == 2
    assert "cannot open" in err.getvalue()


def _with_poster(image: np.ndarray, poster: np.ndarray) -> np.ndarray:
    """`image` with a venue-code poster stuck on the wall at the top right."""
    out = image.copy()
    h, w = poster.shape
    out[20 : 20 + h, 620 - w : 620] = poster[:, :, None]
    return out


@pytest.mark.parametrize("backend", ["auto", "pyzbar"])
def test_a_code_always_in_view_does_not_hide_a_second_one(backend: str) -> None:
    """A venue-code poster at the gate is read first; a citizen's code shown later must still
    be read (naive full-frame decoding reads both), whatever decoder the kiosk has."""
    poster = qf.code_image("VENUE-POSTER-0042", 110)
    phone = qf.shot("plain", qf.token(8), offset=(-120, 40))
    dec = QrDecoder(backend=backend)  # type: ignore[arg-type]
    read: dict[bytes, int] = {}
    frames = [_with_poster(qf.idle_frame(index=i), poster) for i in range(20)]
    frames += [_with_poster(qf.code_frame(phone, index=i), poster) for i in range(20, 65)]
    for i, image in enumerate(frames):
        for d in dec.decode(image, i / 15):
            read.setdefault(d.data, i)
    assert read.get(b"VENUE-POSTER-0042", 99) < 20
    # within the steady full-frame pass's interval (2 s = 30 frames) of appearing
    assert 20 <= read.get(qf.token(8).encode(), 99) <= 20 + 30, read
