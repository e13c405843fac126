"""Checks of what is wired to the Pi: serial port, SAM or MCU, GPIO, audio, camera.

Each opens the device the way the agent would and lets go of it at once. A running agent
holds these devices; doctor then says so (a warning naming the agent's pid) instead of
fighting it for the port: two readers of one serial line would each see half the replies.
"""

from __future__ import annotations

import errno
import os
import time
import wave
from pathlib import Path
from typing import Any

from device.doctor.context import DoctorContext, is_agent
from device.doctor.model import CheckResult, fail, not_configured, ok, warn

#: What stopping the agent for a full hardware check takes (docs/install.md's unit name).
STOP_AGENT = "sudo systemctl stop siheyi-agent (then run doctor, then start it again)"
#: How long the SAM or the MCU may take to answer (a real SAM answers status in ~10 ms).
REPLY_TIMEOUT_S = 1.0


def _is_local(url: str) -> bool:
    return "://" not in url


# --------------------------------------------------------------------------- serial port


def check_serial_port(ctx: DoctorContext) -> CheckResult:
    """The reader's port exists, is not held by another process, and opens."""
    r = ctx.config.reader
    url = r.url
    if not _is_local(url):
        return ok("serial_port", f"{url} is a pyserial URL, not a device node (see reader)")
    if not os.path.exists(url):
        return fail(
            "serial_port",
            f"{url} does not exist",
            "plug in the reader; `ls -l /dev/serial/by-id/` shows what is attached; the udev "
            "rule names it /dev/siheyi-reader (set reader.url to that)",
        )
    holders = ctx.probes.holders(url)
    agents = [(pid, cmd) for pid, cmd in holders if is_agent(cmd)]
    if agents:
        ctx.port_busy = True
        pid, _ = agents[0]
        return warn(
            "serial_port",
            f"{url} is in use by the running kiosk agent (pid {pid}); not opened so the "
            "agent is not disturbed",
            f"to test the reader itself: {STOP_AGENT}",
        )
    if holders:
        ctx.port_busy = True
        pid, cmd = holders[0]
        return fail(
            "serial_port",
            f"{url} is held by another process: pid {pid} ({cmd[:80]})",
            f"stop that process (`kill {pid}`); ModemManager often grabs serial adapters: "
            "`sudo systemctl disable --now ModemManager`",
        )
    try:
        port = _open(url, r.baudrate)
    except Exception as exc:
        return _open_failed(ctx, url, exc)
    port.close()
    return ok("serial_port", f"{url} opens at {r.baudrate} baud")


def _open(url: str, baudrate: int) -> Any:
    import serial

    if _is_local(url):  # flock: a second doctor, or an agent that locks, is seen as busy
        return serial.serial_for_url(url, baudrate=baudrate, timeout=0.05, exclusive=True)
    return serial.serial_for_url(url, baudrate=baudrate, timeout=0.05)


def _open_failed(ctx: DoctorContext, url: str, exc: Exception) -> CheckResult:
    code = getattr(exc, "errno", None)
    text = f"{url} cannot be opened: {exc}"
    if code == errno.EACCES:
        user = ctx.probes.user().name
        group = _group_of(url) or "dialout"
        return fail("serial_port", text, f"add user {user} to group {group}: "
                    f"usermod -aG {group} {user} (then restart the agent)")  # fmt: skip
    if code == errno.EBUSY or "lock" in str(exc).lower():
        ctx.port_busy = True
        return fail("serial_port", f"{url} is busy (another program holds it): {exc}", STOP_AGENT)
    return fail("serial_port", text, "check the reader's cable and reader.url")


def _group_of(path: str) -> str:
    import grp

    try:
        return grp.getgrgid(os.stat(path).st_gid).gr_name
    except (OSError, KeyError):
        return ""


# --------------------------------------------------------------------------- SAM / MCU


def check_reader(ctx: DoctorContext, serial_result: CheckResult) -> CheckResult:
    """The SAM answers a status command, or (MCU wiring) the MCU answers a ping."""
    r = ctx.config.reader
    what = "MCU" if r.wiring == "mcu" else "SAM"
    if ctx.port_busy:
        return warn("reader", f"{what} not asked: {r.url} is in use", STOP_AGENT)
    if serial_result.status == "fail":
        return warn("reader", f"{what} not asked: the serial port is unusable (see serial_port)")
    limit = min(REPLY_TIMEOUT_S, ctx.timeout_s)
    try:
        port = _open(r.url, r.baudrate)
    except Exception as exc:
        return fail("reader", f"{r.url} cannot be opened: {exc}", "see serial_port")
    try:
        if r.wiring == "mcu":
            return _ping_mcu(port, limit)
        return _sam_status(port, limit)
    finally:
        port.close()


def _sam_status(port: Any, limit: float) -> CheckResult:
    from firmware_bridge import sam
    from firmware_bridge.errors import ProtocolError

    parser = sam.ResponseParser()
    port.reset_input_buffer()
    port.write(sam.status_command())
    deadline = time.monotonic() + limit
    garbled = 0
    while time.monotonic() < deadline:
        chunk = port.read(max(1, port.in_waiting))
        for item in parser.feed(chunk) if chunk else []:
            if isinstance(item, ProtocolError):
                garbled += 1
                continue
            if item.sw3 == sam.SW3_OK:
                return ok("reader", f"SAM answers status: SW3 {item.sw3:02X} {item.status_text}")
            return fail(
                "reader",
                f"SAM answers status with SW3 {item.sw3:02X} ({item.status_text})",
                "power-cycle the reader; a SAM that keeps failing its self-test must be replaced",
            )
    if garbled:
        return fail(
            "reader",
            f"only garbled replies to a status command ({garbled} bad frames)",
            "set reader.baudrate to the SAM's speed (115200 by default) and check the cable",
        )
    return fail(
        "reader",
        f"the SAM did not answer a status command within {limit:.1f} s",
        "check the reader's power and USB cable, that reader.url is the reader "
        "(`ls -l /dev/serial/by-id/`) and reader.baudrate",
    )


def _ping_mcu(port: Any, limit: float) -> CheckResult:
    from firmware_bridge import bridge
    from firmware_bridge.errors import ProtocolError

    token = int.from_bytes(os.urandom(4), "big")
    decoder = bridge.Decoder()
    port.reset_input_buffer()
    port.write(bytes(bridge.encode(bridge.PING, 1, bridge.ping_payload(token))))
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        chunk = port.read(max(1, port.in_waiting))
        for msg in decoder.feed(chunk) if chunk else []:
            if isinstance(msg, ProtocolError) or msg.type != bridge.PONG:
                continue  # cards, health and logs are the agent's business, not doctor's
            pong = bridge.parse_pong(msg.payload)
            if pong["token"] == token:
                version, uptime = pong["version"], pong["uptime_ms"] / 1000
                return ok("reader", f"MCU answers ping: firmware {version}, up {uptime:.0f} s")
    return fail(
        "reader",
        f"the MCU did not answer a ping within {limit:.1f} s",
        "check the MCU's power and cable, that it runs firmware_bridge (docs/bridge.md) "
        "and reader.baudrate",
    )


# --------------------------------------------------------------------------- groups


def _needs(ctx: DoctorContext) -> list[tuple[str, str, str]]:
    """``(what, device node, conventional group)`` for every device the config uses."""
    config = ctx.config
    needs: list[tuple[str, str, str]] = []
    if _is_local(config.reader.url):
        needs.append(("the reader", config.reader.url, "dialout"))
    gpio = config.gpio
    if (
        gpio.enabled
        and config.reader.wiring == "direct"
        and gpio.pin_factory != "mock"
        and ctx.pin_factory is None
    ):
        node = next((n for n in ("/dev/gpiochip0", "/dev/gpiomem") if os.path.exists(n)), "")
        needs.append(("GPIO", node, "gpio"))
    kind, _, pcm = config.voice.player.partition(":")
    if kind == "aplay" and pcm != "null":
        pcms = sorted(Path("/dev/snd").glob("pcmC*p")) if Path("/dev/snd").is_dir() else []
        needs.append(("audio", str(pcms[0]) if pcms else "", "audio"))
    source = config.camera.source
    if config.camera.enabled and (source.isdigit() or source.startswith("/dev/")):
        needs.append(("the camera", f"/dev/video{source}" if source.isdigit() else source, "video"))
    return needs


def _can_use(st: os.stat_result, uid: int, gids: frozenset[int]) -> bool:
    """Read and write access by permission bits (for any user, not only the running one)."""
    mode = st.st_mode
    if uid == 0:
        return True
    if st.st_uid == uid:
        return mode & 0o600 == 0o600
    if st.st_gid in gids:
        return mode & 0o060 == 0o060
    return mode & 0o006 == 0o006


def check_groups(ctx: DoctorContext) -> CheckResult:
    """The agent's user may open every device the configuration uses."""
    import grp

    user = ctx.probes.user()
    names = user.group_names()
    missing: list[tuple[str, str]] = []  # (group, why)
    notes: list[str] = []
    for what, node, conventional in _needs(ctx):
        try:
            st = os.stat(node) if node else None
        except OSError:
            st = None
        if st is not None:
            if _can_use(st, user.uid, user.gids):
                continue
            try:
                group = grp.getgrgid(st.st_gid).gr_name
            except KeyError:
                group = str(st.st_gid)
            missing.append((group, f"{what} ({node}, group {group})"))
        elif conventional in names or user.uid == 0:
            continue
        else:
            try:
                grp.getgrnam(conventional)
            except KeyError:
                notes.append(f"no {conventional} group on this system for {what}")
                continue
            missing.append((conventional, f"{what} (group {conventional})"))
    if missing:
        groups = sorted({g for g, _ in missing})
        return fail(
            "groups",
            f"user {user.name} may not use " + ", ".join(w for _, w in missing),
            f"add user {user.name} to group {','.join(groups)}: "
            f"usermod -aG {','.join(groups)} {user.name} (then restart the agent)",
        )
    detail = f"user {user.name} may use every configured device"
    return ok("groups", detail + (f" ({'; '.join(notes)})" if notes else ""))


# --------------------------------------------------------------------------- GPIO


def check_gpio(ctx: DoctorContext) -> CheckResult:
    """The configured pin factory loads and the gate's pins can be claimed (relay off)."""
    config = ctx.config
    if config.reader.wiring == "mcu":
        return not_configured("gpio", "not configured: the MCU drives relay and lights")
    if not config.gpio.enabled:
        return not_configured("gpio", "not configured (gpio.enabled = false)")
    agents = ctx.probes.agents()  # a kiosk agent, not this process
    if agents and ctx.pin_factory is None and config.gpio.pin_factory != "mock":
        return warn(
            "gpio",
            f"pins not claimed: a kiosk agent is running (pid {agents[0]}) and may hold them",
            f"to test GPIO itself: {STOP_AGENT}",
        )
    from device.acting.gate import Gate
    from device.runtime import make_pin_factory

    g = config.gpio
    name = g.pin_factory or "gpiozero's default"
    own = None
    try:
        factory = ctx.pin_factory
        if factory is None:
            factory = own = make_pin_factory(g.pin_factory)
        gate = Gate(
            g.relay_pin,
            g.green_led_pin,
            g.red_led_pin,
            g.buzzer_pin,
            active_high=g.active_high,
            pin_factory=factory,
        )
        used = type(gate.relay.pin_factory).__name__
        gate.close()
    except Exception as exc:  # ImportError, BadPinFactory, PinUnknownPi, GateError, OSError
        return fail(
            "gpio",
            f"pin factory {name} does not work: {type(exc).__name__}: {exc}",
            "install the backend (Raspberry Pi OS bookworm: `sudo apt install python3-lgpio`, "
            "in the agent's venv `pip install lgpio`) or set gpio.pin_factory; "
            "gpio.enabled = false when the relay is not wired to this Pi",
        )
    finally:
        if own is not None:
            own.close()
    pins = (
        f"relay {g.relay_pin}, green {g.green_led_pin}, red {g.red_led_pin}, buzzer {g.buzzer_pin}"
    )
    return ok("gpio", f"{used} claims {pins}")


# --------------------------------------------------------------------------- audio


def _silence(path: Path) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(b"\0\0" * 3200)  # 0.2 s
    return path


def check_audio(ctx: DoctorContext, clip: Path | None, scratch: Path) -> CheckResult:
    """The configured player plays a clip (the rendered test prompt, else 0.2 s of silence)."""
    import subprocess

    from device.acting.voice import AplayPlayer, check_wav, make_player

    spec = ctx.config.voice.player
    target = clip if clip is not None else _silence(scratch / "doctor-silence.wav")
    player = make_player(spec)
    if not isinstance(player, AplayPlayer):
        try:
            player.play(target, "doctor")
        finally:
            player.close()
        return warn(
            "audio",
            f"voice.player = {spec!r} does not play sound aloud (tests and demos)",
            'set voice.player = "aplay" (or aplay:plughw:CARD,0) on a real kiosk',
        )
    argv = player.argv(target)
    limit = max(ctx.timeout_s, check_wav(target) + 1.0)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=limit, check=False)
    except FileNotFoundError:
        return fail("audio", f"{argv[0]} is not installed", "sudo apt install alsa-utils")
    except subprocess.TimeoutExpired:
        return fail(
            "audio",
            f"{' '.join(argv[:-1])} did not finish a {limit - 1.0:.1f} s clip in {limit:.1f} s",
            "check the audio device (`aplay -l`) and voice.player",
        )
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or ["no message"])[-1]
        agents = ctx.probes.agents()
        if "busy" in why.lower() and agents:
            return warn(
                "audio",
                f"{' '.join(argv[:-1])}: device busy; a kiosk agent is running (pid {agents[0]})",
                f"to test audio itself: {STOP_AGENT}",
            )
        return fail(
            "audio",
            f"{' '.join(argv[:-1])} failed (exit {done.returncode}): {why}",
            'list devices with `aplay -L` and set voice.player = "aplay:DEVICE" '
            "(e.g. aplay:plughw:1,0); a busy device means another program plays on it",
        )
    what = "the test prompt" if clip is not None else "0.2 s of silence (test prompt not rendered)"
    return ok("audio", f"{' '.join(argv[:-1])} played {what}")


# --------------------------------------------------------------------------- camera


def check_camera(ctx: DoctorContext) -> CheckResult:
    """Frames arrive from the configured camera, video file or stream."""
    cam = ctx.config.camera
    if not cam.enabled:
        return not_configured("camera", "not configured (camera.enabled = false)")
    from device.errors import CameraError
    from device.sources.camera import OpenCvCamera

    camera = OpenCvCamera(
        cam.source, width=cam.width, height=cam.height, fps=cam.fps, timeout_s=ctx.timeout_s
    )
    node = f"/dev/video{cam.source}" if cam.source.isdigit() else cam.source
    holders = ctx.probes.holders(node) if node.startswith("/dev/") else []
    if holders:
        pid, cmd = holders[0]
        who = "the kiosk agent" if is_agent(cmd) else f"{cmd[:60]!r}"
        return warn(
            "camera",
            f"{node} not opened: in use by {who} (pid {pid})",
            f"to test the camera itself: {STOP_AGENT}" if is_agent(cmd) else f"kill {pid}",
        )
    try:
        camera.open()
    except CameraError as exc:
        return fail(
            "camera",
            str(exc),
            "check the camera cable and `v4l2-ctl --list-devices`, and camera.source",
        )
    frames, shape = 0, ""
    deadline = time.monotonic() + max(0.5, ctx.timeout_s - 0.5)
    try:
        while frames < ctx.thresholds.camera_frames and time.monotonic() < deadline:
            image = camera.read()
            if image is None:
                if not camera.live:
                    break  # a file that ended (or holds no frame)
                time.sleep(0.02)
                continue
            frames += 1
            shape = f"{image.shape[1]}x{image.shape[0]}"
    finally:
        camera.close()
    if frames < ctx.thresholds.camera_frames:
        return fail(
            "camera",
            f"camera {cam.source} opened but gave {frames} frames "
            f"(wanted {ctx.thresholds.camera_frames})",
            "check the camera (`v4l2-ctl --list-devices`), its cable and its light; for a "
            "stream, the URL and the network",
        )
    return ok("camera", f"camera {cam.source}: {frames} frames of {shape}")
