"""What is wired to the Pi: the reader's port, the SAM or the MCU, groups, GPIO, audio, camera."""

from __future__ import annotations

import grp
import os
import select
import subprocess
import sys
import threading
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from device.doctor import UserInfo
from firmware_bridge import bridge
from firmware_bridge.errors import ProtocolError
from tests.device import qrframes
from tests.doctor.conftest import Kiosk, write_wav
from tests.e2e_support import card


async def test_a_missing_port_fails_and_the_sam_is_not_asked(kiosk: Kiosk) -> None:
    config = kiosk.configured(reader={"url": str(kiosk.tmp_path / "ttyUSB9")})
    report = await kiosk.run(config)
    port = report.by_name("serial_port")
    assert port.status == "fail" and "does not exist" in port.detail
    assert "/dev/serial/by-id" in port.fix
    assert report.by_name("reader").detail.startswith("SAM not asked")


async def test_a_silent_sam_fails(kiosk: Kiosk) -> None:
    kiosk.sim.silent = True
    report = await kiosk.run()
    assert report.status("serial_port") == "ok"
    check = report.by_name("reader")
    assert check.status == "fail" and "did not answer a status command" in check.detail
    assert "reader.baudrate" in check.fix


async def test_a_sam_failing_its_self_test_fails(kiosk: Kiosk) -> None:
    kiosk.sim.sam.self_test_failed = True
    check = (await kiosk.run()).by_name("reader")
    assert check.status == "fail" and "SW3 60 (SAM self-test failed)" in check.detail
    assert "replaced" in check.fix


async def test_a_garbled_reply_points_at_the_baud_rate(kiosk: Kiosk) -> None:
    kiosk.sim.sam.corrupt_next = True
    check = (await kiosk.run()).by_name("reader")
    assert check.status == "fail" and "garbled" in check.detail and "baudrate" in check.fix


async def test_doctor_never_reads_a_card_in_the_field(kiosk: Kiosk) -> None:
    kiosk.sim.place(card("11010519491231002X"))
    report = await kiosk.run()
    assert report.status("reader") == "ok"
    assert [(cmd, para) for cmd, para, _ in kiosk.sim.sam.history] == [(0x11, 0xFF)]


@pytest.fixture
def holder(kiosk: Kiosk) -> Iterator[list[subprocess.Popen[str]]]:
    """Start processes that keep the reader's port open (stopped at the end)."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        proc.terminate()
        proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


def _hold(holder: list[subprocess.Popen[str]], path: str, *argv: str) -> None:
    code = "import sys, time; f = open(sys.argv[1], 'rb', buffering=0); print('held', flush=True)"
    proc = subprocess.Popen(
        [sys.executable, "-c", code + "; time.sleep(60)", path, *argv],
        stdout=subprocess.PIPE,
        text=True,
    )
    holder.append(proc)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"


async def test_a_port_held_by_the_agent_is_reported_as_busy_not_broken(
    kiosk: Kiosk, holder: list[subprocess.Popen[str]]
) -> None:
    _hold(holder, kiosk.sim.path, "kiosk", "device", "run", "--config", "kiosk.toml")
    report = await kiosk.run()
    port = report.by_name("serial_port")
    assert port.status == "warn"
    assert f"in use by the running kiosk agent (pid {holder[0].pid})" in port.detail
    assert "systemctl stop siheyi-agent" in port.fix
    reader = report.by_name("reader")
    assert reader.status == "warn" and "in use" in reader.detail
    assert report.ok  # a running agent is not a failure


async def test_a_port_held_by_another_program_fails(
    kiosk: Kiosk, holder: list[subprocess.Popen[str]]
) -> None:
    _hold(holder, kiosk.sim.path)
    check = (await kiosk.run()).by_name("serial_port")
    assert check.status == "fail" and f"pid {holder[0].pid}" in check.detail
    assert f"kill {holder[0].pid}" in check.fix and "ModemManager" in check.fix


class FakeMcu:
    """An MCU running firmware_bridge, as far as a ping goes: PONG with the PING's token."""

    def __init__(self, *, silent: bool = False) -> None:
        self.master, slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        self._slave = slave
        self.silent = silent
        self.pings = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        decoder = bridge.Decoder()
        seq = 100
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if not ready:
                continue
            for msg in decoder.feed(os.read(self.master, 512)):
                if isinstance(msg, ProtocolError) or msg.type != bridge.PING:
                    continue
                self.pings += 1
                if self.silent:
                    continue
                seq += 1
                # A HEALTH before the answer: doctor must look past other traffic.
                os.write(self.master, bytes(bridge.encode(bridge.HEALTH, seq, b"{}")))
                token = bridge.parse_ping(msg.payload)
                pong = bridge.pong_payload(token, 61_000, "fw-1.2")
                os.write(self.master, bytes(bridge.encode(bridge.PONG, seq + 1, pong)))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        os.close(self.master)
        os.close(self._slave)


@pytest.mark.parametrize("silent", [False, True])
async def test_behind_an_mcu_the_mcu_answers_a_ping(kiosk: Kiosk, silent: bool) -> None:
    mcu = FakeMcu(silent=silent)
    try:
        config = kiosk.configured(reader={"url": mcu.path, "wiring": "mcu"})
        report = await kiosk.run(config)
    finally:
        mcu.close()
    assert mcu.pings == 1
    check = report.by_name("reader")
    if silent:
        assert check.status == "fail" and "MCU did not answer a ping" in check.detail
    else:
        assert check.status == "ok" and "firmware fw-1.2, up 61 s" in check.detail
    gpio = report.by_name("gpio")
    assert gpio.status == "ok" and "MCU drives" in gpio.detail


@pytest.fixture
def dialout_node(tmp_path: Path) -> Path:
    """A device node stand-in owned by root:dialout, mode 0660 (as udev makes ttyUSB0)."""
    node = tmp_path / "ttyUSB0"
    node.write_bytes(b"")
    node.chmod(0o660)
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file to group dialout")
    os.chown(node, 0, 20)
    return node


async def test_a_user_outside_the_device_group_fails_with_usermod(
    kiosk: Kiosk, dialout_node: Path
) -> None:
    config = kiosk.configured(reader={"url": str(dialout_node)})
    outsider = UserInfo("siheyi", 4242, frozenset({4242}))
    check = (await kiosk.run(config, probes=kiosk.probes(user=lambda: outsider))).by_name("groups")
    assert check.status == "fail" and str(dialout_node) in check.detail
    assert check.fix.startswith("add user siheyi to group dialout: usermod -aG dialout siheyi")
    member = UserInfo("siheyi", 4242, frozenset({4242, 20}))
    report = await kiosk.run(config, probes=kiosk.probes(user=lambda: member))
    assert report.status("groups") == "ok"


async def test_without_the_node_the_conventional_group_is_required(kiosk: Kiosk) -> None:
    try:
        grp.getgrnam("video")
    except KeyError:
        pytest.skip("this system has no video group")
    config = kiosk.configured(camera={"source": "/dev/video97"})
    outsider = UserInfo("siheyi", 4242, frozenset({4242}))
    check = (await kiosk.run(config, probes=kiosk.probes(user=lambda: outsider))).by_name("groups")
    assert check.status == "fail" and "usermod -aG" in check.fix and "video" in check.fix


async def test_a_pin_factory_that_does_not_load_fails(kiosk: Kiosk) -> None:
    config = kiosk.configured(gpio={"pin_factory": "lgpio"})
    check = (await kiosk.run(config, pin_factory=None)).by_name("gpio")
    assert check.status == "fail" and "pin factory lgpio does not work" in check.detail
    assert "python3-lgpio" in check.fix


async def test_gpio_pins_are_claimed_and_left_off(kiosk: Kiosk) -> None:
    check = (await kiosk.run()).by_name("gpio")
    assert check.status == "ok" and "MockFactory" in check.detail
    relay = kiosk.pin_factory.pin(kiosk.config.gpio.relay_pin)
    assert [state.state for state in relay.states] == [False]  # never energised


async def test_gpio_is_left_to_a_running_agent(kiosk: Kiosk) -> None:
    config = kiosk.configured(gpio={"pin_factory": "lgpio"})
    report = await kiosk.run(config, pin_factory=None, probes=kiosk.probes(agents=lambda: [4321]))
    check = report.by_name("gpio")
    assert check.status == "warn" and "pid 4321" in check.detail


async def test_gpio_disabled_is_reported_as_not_configured(kiosk: Kiosk) -> None:
    check = (await kiosk.run(kiosk.configured(gpio={"enabled": False}))).by_name("gpio")
    assert (check.status, check.detail) == ("ok", "not configured (gpio.enabled = false)")


async def test_an_audio_device_that_does_not_play_fails(kiosk: Kiosk) -> None:
    config = kiosk.configured(voice={"player": "aplay:nosuchdevice"})
    check = (await kiosk.run(config)).by_name("audio")
    assert check.status == "fail" and "aplay -q -D nosuchdevice failed" in check.detail
    assert "aplay -L" in check.fix


async def test_audio_plays_silence_when_the_test_prompt_is_missing(kiosk: Kiosk) -> None:
    config = kiosk.configured(commands={"test_prompt": "not rendered"})
    report = await kiosk.run(config)
    check = report.by_name("audio")
    assert check.status == "ok" and "silence" in check.detail
    assert report.status("prompts") == "fail"


async def test_a_player_that_is_not_a_sound_device_warns(kiosk: Kiosk) -> None:
    check = (await kiosk.run(kiosk.configured(voice={"player": "mock"}))).by_name("audio")
    assert check.status == "warn" and 'voice.player = "aplay"' in check.fix


async def test_a_camera_without_frames_fails(kiosk: Kiosk) -> None:
    empty = qrframes.write_video([], kiosk.tmp_path / "empty.avi")
    check = (await kiosk.run(kiosk.configured(camera={"source": str(empty)}))).by_name("camera")
    assert check.status == "fail" and "gave 0 frames" in check.detail and check.fix


async def test_a_camera_that_does_not_open_fails(kiosk: Kiosk) -> None:
    junk = write_wav(kiosk.tmp_path / "not-a-video.avi")
    check = (await kiosk.run(kiosk.configured(camera={"source": str(junk)}))).by_name("camera")
    assert check.status == "fail" and "cannot open camera source" in check.detail


async def test_a_camera_the_agent_holds_is_left_alone(kiosk: Kiosk) -> None:
    config = kiosk.configured(camera={"source": "/dev/video5"})

    def holders(path: str) -> list[tuple[int, str]]:
        return [(77, "/opt/siheyi/current/bin/kiosk device run --config k.toml")] * (
            path == "/dev/video5"
        )

    check = (await kiosk.run(config, probes=kiosk.probes(holders=holders))).by_name("camera")
    assert check.status == "warn" and "in use by the kiosk agent (pid 77)" in check.detail


async def test_no_camera_is_reported_as_not_configured(kiosk: Kiosk) -> None:
    report = await kiosk.run(kiosk.configured(camera={"enabled": False}))
    assert report.by_name("camera").detail == "not configured (camera.enabled = false)"
    assert report.status("camera") == "ok"


class _PlayedFiles:
    """Records what the audio check hands to aplay (and still runs it on ALSA null)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from device.acting.voice import check_wav

        self.seconds: list[float] = []
        self.paths: list[Path] = []
        real = subprocess.run

        def run(argv: list[str], *args: object, **kwargs: object) -> object:
            if Path(argv[0]).name == "aplay":
                self.paths.append(Path(argv[-1]))
                self.seconds.append(check_wav(Path(argv[-1])))
            return real(argv, *args, **kwargs)  # type: ignore[call-overload]

        monkeypatch.setattr("device.doctor.outputs.subprocess.run", run)


async def test_audio_speaks_the_rendered_test_prompt_by_default(
    kiosk: Kiosk, monkeypatch: pytest.MonkeyPatch
) -> None:
    played = _PlayedFiles(monkeypatch)
    check = (await kiosk.run()).by_name("audio")
    assert check.status == "ok" and "the test prompt" in check.detail
    assert [p.parent for p in played.paths] == [kiosk.tmp_path / "prompts"]


async def test_quiet_audio_opens_the_device_with_generated_silence(
    kiosk: Kiosk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The boot guard runs doctor at a gate on every trial start: nothing is spoken."""
    played = _PlayedFiles(monkeypatch)
    check = (await kiosk.run(quiet_audio=True)).by_name("audio")
    assert (check.status, check.detail) == (
        "ok",
        "aplay -q -D null played 0.2 s of silence (--quiet-audio)",
    )
    assert played.seconds == [pytest.approx(0.2)]
    assert kiosk.tmp_path / "prompts" not in [p.parent for p in played.paths]


async def test_quiet_audio_still_fails_a_device_that_does_not_open(kiosk: Kiosk) -> None:
    config = kiosk.configured(voice={"player": "aplay:nosuchdevice"})
    check = (await kiosk.run(config, quiet_audio=True)).by_name("audio")
    assert check.status == "fail" and "aplay -q -D nosuchdevice failed" in check.detail
