"""What the kiosk acts with: the gate's GPIO pins and the audio device.

The pins are claimed with the relay off and released at once (the relay never clicks); the
audio check plays a clip through the configured player to its end and reads aplay's status,
which the agent's fire-and-forget playback never looks at (``--quiet-audio``: silence, for
the boot guard, which runs doctor at the gate on every trial start).
"""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

from device.doctor.context import STOP_AGENT, DoctorContext
from device.doctor.model import CheckResult, fail, not_configured, ok, warn


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


def _silence(path: Path) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(b"\0\0" * 3200)  # 0.2 s
    return path


def check_audio(
    ctx: DoctorContext, clip: Path | None, scratch: Path, *, quiet: bool = False
) -> CheckResult:
    """The configured player plays a clip: the rendered test prompt, else (none rendered, or
    ``quiet``: the boot guard at a gate where people stand) 0.2 s of generated silence, which
    opens the device just the same."""
    from device.acting.voice import AplayPlayer, check_wav, make_player

    spec = ctx.config.voice.player
    if quiet:
        clip = None
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
    return ok("audio", f"{' '.join(argv[:-1])} played {_played(clip, quiet)}")


def _played(clip: Path | None, quiet: bool) -> str:
    if quiet:
        return "0.2 s of silence (--quiet-audio)"
    return "the test prompt" if clip is not None else "0.2 s of silence (test prompt not rendered)"
