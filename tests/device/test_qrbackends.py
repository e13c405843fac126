"""The QR decoders: zxing-cpp first, pyzbar fallback; what happens when either is missing or
fails; the choice in config, health, `kiosk camera scan` and `kiosk doctor`."""

from __future__ import annotations

import io
import logging
import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest
import segno
from packaging.requirements import Requirement

from device.config import DeviceConfig
from device.doctor.context import DoctorContext
from device.doctor.qrdecoder import check_qr_decoder
from device.errors import NoQrDecoder
from device.runtime import credential_sources
from device.sources import qrbackends
from device.sources.camera import MockCamera
from device.sources.camera_cli import scan
from device.sources.qrscan import QrDecoder, QrScanner
from tests.device import qrframes as qf

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_zxing(monkeypatch: pytest.MonkeyPatch) -> None:
    """zxing-cpp not installed (as on 32-bit Raspberry Pi OS): its import fails."""
    monkeypatch.setitem(sys.modules, "zxingcpp", None)


@pytest.fixture
def no_zbar(monkeypatch: pytest.MonkeyPatch) -> None:
    """pyzbar unusable (libzbar0 missing): its import fails."""
    monkeypatch.setitem(sys.modules, "pyzbar", None)
    monkeypatch.setitem(sys.modules, "pyzbar.pyzbar", None)


def code_image(payload: str | bytes, scale: int = 5) -> np.ndarray:
    """A clean grayscale code on a white quiet zone."""
    matrix = np.array(segno.make(payload, error="m", micro=False).matrix, dtype=bool)
    code = np.pad(np.where(matrix, 0, 255).astype(np.uint8), 4, constant_values=255)
    return np.kron(code, np.ones((scale, scale), np.uint8)).astype(np.uint8)


def test_zxing_is_first_and_pyzbar_the_fallback() -> None:
    names = [b.name for b in qrbackends.chain("auto")]
    assert names == ["zxing-cpp", "pyzbar"]
    assert [b.name for b in qrbackends.chain("zxing")] == names
    assert [b.name for b in qrbackends.chain("pyzbar")] == ["pyzbar"]
    described = qrbackends.describe(qrbackends.chain())
    assert described.startswith("zxing-cpp 3.") and ", fallback pyzbar 0." in described


@pytest.mark.parametrize("name", ["zxing-cpp", "pyzbar"])
def test_every_backend_reads_the_self_test_code(name: str) -> None:
    backend = qrbackends.load(name)
    assert backend is not None and qrbackends.self_test(backend)


def test_both_backends_give_utf8_text_and_where_the_code_is() -> None:
    image = np.full((300, 400), 200, np.uint8)
    code = code_image("绿码通行 https://hc.example.cn/v?t=AbC123", scale=4)
    image[40 : 40 + code.shape[0], 60 : 60 + code.shape[1]] = code
    for backend in qrbackends.chain():
        (sym,) = backend.decode(image)
        assert sym.data.decode("utf-8") == "绿码通行 https://hc.example.cn/v?t=AbC123"
        x, y, w, h = sym.box
        assert 60 + 4 * 4 - 3 <= x <= 60 + 4 * 4 + 3, (backend.name, sym.box)
        assert 40 + 4 * 4 - 3 <= y <= 40 + 4 * 4 + 3, (backend.name, sym.box)
        assert abs(w - (code.shape[1] - 32)) <= 6 and abs(h - (code.shape[0] - 32)) <= 6


def test_zxing_hands_binary_content_over_as_bytes() -> None:
    payload = bytes(range(0, 256, 7))
    zx = qrbackends.load("zxing-cpp")
    assert zx is not None
    (sym,) = zx.decode(code_image(payload))
    assert sym.data == payload


def test_without_zxing_the_decoder_uses_pyzbar_alone(no_zxing: None) -> None:
    assert qrbackends.load("zxing-cpp") is None
    dec = QrDecoder()
    assert [b.name for b in dec.backends] == ["pyzbar"]
    assert dec.decoder_names.startswith("pyzbar ") and "fallback" not in dec.decoder_names
    found = []
    for i, image in enumerate([qf.code_frame(qf.shot("inverted", qf.token(3)))] * 6):
        found += dec.decode(image, i / 30)
    assert {d.data for d in found} == {qf.token(3).encode()}  # zbar with the inverted variant


def test_without_libzbar_the_decoder_uses_zxing_alone(no_zbar: None) -> None:
    dec = QrDecoder()
    assert [b.name for b in dec.backends] == ["zxing-cpp"]
    image = qf.code_frame(qf.shot("plain", qf.token(4)))
    assert [d.data for d in dec.decode(image, 0.0)] == [qf.token(4).encode()]


def test_with_no_decoder_at_all_the_error_says_what_to_install(
    no_zxing: None, no_zbar: None
) -> None:
    with pytest.raises(NoQrDecoder, match=r"zxing-cpp.*libzbar0"):
        QrDecoder()


class _Broken:
    name = "zxing-cpp"
    version = "0"

    def decode(self, gray: Any) -> list[qrbackends.Symbol]:
        raise RuntimeError("decoder bug")


def test_a_decoder_that_raises_falls_back_to_pyzbar(caplog: pytest.LogCaptureFixture) -> None:
    dec = QrDecoder()
    dec.backends[0] = dec._first = dec._cheap = _Broken()
    image = qf.code_frame(qf.shot("plain", qf.token(5)))
    with caplog.at_level(logging.WARNING):
        found = dec.decode(image, 0.0)
    assert [d.data for d in found] == [qf.token(5).encode()]
    assert dec.stats["zxing-cpp_errors"] >= 1 and dec.stats["pyzbar_calls"] >= 1
    assert "qr decoder zxing-cpp failed (1 times so far): RuntimeError" in caplog.text


def test_zxing_requirement_matches_the_platforms_with_wheels() -> None:
    """zxing-cpp publishes x86_64 and aarch64 wheels, not armv7l: pip must not try to build it
    there (the kiosk then decodes with pyzbar, and doctor says why)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (line,) = project["optional-dependencies"]["zxing"]
    marker = Requirement(line).marker
    assert marker is not None
    for machine, wanted in (("x86_64", True), ("aarch64", True), ("armv7l", False)):
        assert marker.evaluate({"platform_machine": machine}) is wanted, machine


# -- config, health, CLI, runtime --------------------------------------------------------


def config(**camera: Any) -> DeviceConfig:
    return DeviceConfig.from_dict({"camera": {"enabled": True, **camera}})


def test_the_decoder_is_a_config_key_with_three_choices() -> None:
    assert config().camera.decoder == "auto"
    assert config(decoder="pyzbar").camera.decoder == "pyzbar"
    with pytest.raises(ValueError, match="decoder"):
        config(decoder="zbar")


def test_the_agent_uses_the_configured_decoder_and_reports_it() -> None:
    (source,) = credential_sources(config(decoder="pyzbar"))
    assert isinstance(source, QrScanner)
    assert [b.name for b in source.decoder.backends] == ["pyzbar"]
    assert source.health()["decoder"].startswith("pyzbar ")
    (source,) = credential_sources(config())
    assert isinstance(source, QrScanner)
    assert source.health()["decoder"].startswith("zxing-cpp ")


def test_the_agent_keeps_its_card_reader_when_no_decoder_loads(
    no_zxing: None, no_zbar: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        assert credential_sources(config()) == []
    assert "camera disabled: no QR decoder loads" in caplog.text


def test_camera_scan_says_which_decoder_it_uses(tmp_path: Path) -> None:
    video = qf.write_video([qf.code_frame(qf.shot("plain", qf.token(6)))] * 5, tmp_path / "a.avi")
    out, err = io.StringIO(), io.StringIO()
    assert scan(str(video), decoder="pyzbar", out=out, err=err) == 0
    assert "decoding with pyzbar " in err.getvalue()
    assert qf.token(6) in out.getvalue()


def test_camera_scan_without_decoders_exits_2(no_zxing: None, no_zbar: None) -> None:
    err = io.StringIO()
    assert scan("unused.avi", out=io.StringIO(), err=err) == 2
    assert "no QR decoder loads" in err.getvalue()


def test_scanner_health_names_the_decoders() -> None:
    health = QrScanner(MockCamera([])).health()
    assert health["decoder"] == qrbackends.describe(qrbackends.chain())


# -- kiosk doctor ------------------------------------------------------------------------


def doctor(cfg: DeviceConfig, machine: str = "x86_64") -> tuple[str, str, str]:
    ctx = cast(DoctorContext, SimpleNamespace(config=cfg))
    result = check_qr_decoder(ctx, machine=machine)
    assert result.name == "qr_decoder"
    return result.status, result.detail, result.fix


def test_doctor_names_both_decoders_when_all_is_well() -> None:
    status, detail, _fix = doctor(config())
    assert status == "ok"
    assert detail.startswith("zxing-cpp ") and "fallback pyzbar" in detail


def test_doctor_shows_a_pyzbar_only_choice() -> None:
    assert doctor(config(decoder="pyzbar"))[:2] == (
        "ok",
        f"{qrbackends.describe(qrbackends.chain('pyzbar'))} (camera.decoder = pyzbar)",
    )


def test_doctor_without_a_camera_is_not_configured() -> None:
    cfg = DeviceConfig.from_dict({"camera": {"enabled": False}})
    assert doctor(cfg)[:2] == ("ok", "not configured (camera.enabled = false)")


def test_doctor_warns_when_zxing_is_missing_where_it_has_wheels(no_zxing: None) -> None:
    status, detail, fix = doctor(config(), machine="aarch64")
    assert status == "warn" and "zxing-cpp is not installed" in detail
    assert "deploy/install.sh" in fix and "zxing-cpp" in fix


def test_doctor_accepts_pyzbar_alone_on_32_bit_pi_os(no_zxing: None) -> None:
    status, detail, _ = doctor(config(), machine="armv7l")
    assert status == "ok" and "no zxing-cpp wheel for armv7l" in detail
    assert doctor(config(decoder="zxing"), machine="armv7l")[0] == "warn"  # asked for, absent


def test_doctor_warns_without_the_pyzbar_fallback(no_zbar: None) -> None:
    status, detail, fix = doctor(config())
    assert status == "warn" and "no pyzbar fallback" in detail
    assert fix == "sudo apt install libzbar0"


def test_doctor_fails_without_any_decoder(no_zxing: None, no_zbar: None) -> None:
    status, detail, fix = doctor(config())
    assert status == "fail" and "no QR decoder loads" in detail
    assert "libzbar0" in fix and "zxing-cpp" in fix


def test_a_32_bit_python_on_a_64_bit_kernel_is_not_a_machine_with_wheels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """32-bit Raspberry Pi OS on a Pi 4/5: the kernel says aarch64, the Python is 32-bit."""
    from device.doctor import qrdecoder

    monkeypatch.setattr(qrdecoder.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(qrdecoder.sys, "maxsize", 2**31 - 1)
    assert qrdecoder.this_machine() == "armv7l"
    monkeypatch.setattr(qrdecoder.sys, "maxsize", 2**63 - 1)
    assert qrdecoder.this_machine() == "aarch64"


def test_doctor_fails_a_decoder_that_cannot_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qrbackends, "load", lambda name: _Broken())
    status, detail, _ = doctor(config())
    assert status == "fail" and "cannot read the test code" in detail
