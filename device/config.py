"""Kiosk agent configuration: one TOML file, validated once at start-up.

A kiosk in the field cannot ask anyone what a typo meant, so every key is checked before the
agent starts, unknown keys are refused, and every error names the file and the dotted key
(ESPHome style). Defaults are what a Raspberry Pi kiosk with a USB reader needs.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.bundle import Bundle, decode_bundle
from core.errors import BundleError
from core.outcomes import DEFAULT_PROMPTS
from device.errors import ConfigError


@dataclass(frozen=True)
class ReaderConfig:
    """The ID-card reader: where it is and how patient to be with it."""

    url: str = "/dev/ttyUSB0"
    baudrate: int = 115200
    wiring: str = "direct"
    poll_interval_s: float = 0.1
    command_timeout_s: float = 0.2
    read_timeout_s: float = 3.0
    reconnect_interval_s: float = 0.5

    def validate(self, where: str) -> None:
        if self.wiring not in ("direct", "mcu"):
            raise ConfigError(f"{where}.wiring: 'direct' or 'mcu', got {self.wiring!r}")
        if self.baudrate not in (9600, 19200, 38400, 57600, 115200):
            raise ConfigError(f"{where}.baudrate: not a SAM baud rate: {self.baudrate}")
        _positive(where, "poll_interval_s", self.poll_interval_s)
        _positive(where, "command_timeout_s", self.command_timeout_s)
        _positive(where, "read_timeout_s", self.read_timeout_s)
        _positive(where, "reconnect_interval_s", self.reconnect_interval_s)


@dataclass(frozen=True)
class VerifyConfig:
    """How long a tap may wait for the server before the kiosk decides alone."""

    deadline_s: float = 1.2
    circuit_threshold: int = 3
    circuit_cooldown_s: float = 2.0
    circuit_max_cooldown_s: float = 30.0
    clock_tolerance_s: float = 120.0

    def validate(self, where: str) -> None:
        if not 0.05 <= self.deadline_s <= 2.5:
            raise ConfigError(
                f"{where}.deadline_s: must be in [0.05, 2.5] s, got {self.deadline_s}"
            )
        if not 1 <= self.circuit_threshold <= 100:
            raise ConfigError(
                f"{where}.circuit_threshold: must be in [1, 100], got {self.circuit_threshold}"
            )
        _positive(where, "circuit_cooldown_s", self.circuit_cooldown_s)
        if self.circuit_max_cooldown_s < self.circuit_cooldown_s:
            raise ConfigError(f"{where}.circuit_max_cooldown_s: must be >= circuit_cooldown_s")
        _positive(where, "clock_tolerance_s", self.clock_tolerance_s)


@dataclass(frozen=True)
class CacheConfig:
    """The kiosk's pseudonymised offline cache."""

    enabled: bool = True
    max_age_s: float = 24 * 3600.0
    max_entries: int = 200_000
    snapshot_interval_s: float = 900.0  # 0: never pre-load the site's people

    def validate(self, where: str) -> None:
        if not 60 <= self.max_age_s <= 14 * 24 * 3600:
            raise ConfigError(
                f"{where}.max_age_s: must be in [60, 1209600] s, got {self.max_age_s}"
            )
        if not 100 <= self.max_entries <= 5_000_000:
            raise ConfigError(f"{where}.max_entries: must be in [100, 5000000]")
        if self.snapshot_interval_s != 0 and not 10 <= self.snapshot_interval_s <= 86400:
            raise ConfigError(f"{where}.snapshot_interval_s: 0 or in [10, 86400]")


@dataclass(frozen=True)
class VoiceConfig:
    """Prompt synthesis and playback."""

    voice: str = "sit/cmn"
    rate: int = 170
    player: str = "aplay"
    cache_dir: str = ""
    prompts: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PROMPTS))

    def validate(self, where: str) -> None:
        kind, _, arg = self.player.partition(":")
        if kind not in ("aplay", "null", "mock", "file") or (kind == "file" and not arg):
            raise ConfigError(
                f"{where}.player: expected aplay, aplay:DEVICE, null, file:DIR or mock, "
                f"got {self.player!r}"
            )
        if not 80 <= self.rate <= 400:
            raise ConfigError(f"{where}.rate: must be in [80, 400], got {self.rate}")
        unknown = set(self.prompts) - set(DEFAULT_PROMPTS)
        if unknown:
            raise ConfigError(f"{where}.prompts: unknown outcome(s) {sorted(unknown)}")

    def prompt(self, outcome: str) -> str:
        """The configured text for an outcome, falling back to the built-in default."""
        return self.prompts.get(outcome) or DEFAULT_PROMPTS[outcome]


@dataclass(frozen=True)
class GpioConfig:
    """Relay, lights and buzzer pins (BCM numbering)."""

    enabled: bool = True
    pin_factory: str = ""
    relay_pin: int = 17
    green_led_pin: int = 27
    red_led_pin: int = 22
    buzzer_pin: int = 23
    relay_pulse_s: float = 3.0
    active_high: bool = True

    def validate(self, where: str) -> None:
        pins = [self.relay_pin, self.green_led_pin, self.red_led_pin, self.buzzer_pin]
        if len(set(pins)) != len(pins):
            raise ConfigError(f"{where}: relay, LED and buzzer pins must differ, got {pins}")
        for name, pin in zip(
            ("relay_pin", "green_led_pin", "red_led_pin", "buzzer_pin"), pins, strict=True
        ):
            if not 0 <= pin <= 27:
                raise ConfigError(f"{where}.{name}: BCM pin must be 0..27, got {pin}")
        if not 0.1 <= self.relay_pulse_s <= 30:
            raise ConfigError(
                f"{where}.relay_pulse_s: must be in [0.1, 30], got {self.relay_pulse_s}"
            )
        if self.pin_factory not in ("", "mock", "lgpio", "rpigpio", "pigpio", "native"):
            raise ConfigError(f"{where}.pin_factory: unknown factory {self.pin_factory!r}")


@dataclass(frozen=True)
class CameraConfig:
    """The QR camera (health codes and signed passes)."""

    enabled: bool = False
    source: str = "0"  # device index, /dev/videoN, a video file or an rtsp:// / http:// URL
    width: int = 640
    height: int = 480
    fps: float = 15.0
    dedupe_s: float = 3.0  # the same code seen again within this window is one credential
    max_payload: int = 1024
    stall_s: float = 3.0  # no frame for this long: reopen the camera

    def validate(self, where: str) -> None:
        if not self.source:
            raise ConfigError(f"{where}.source: must not be empty")
        if not (160 <= self.width <= 1920 and 120 <= self.height <= 1080):
            raise ConfigError(f"{where}.width/height: between 160x120 and 1920x1080")
        if not 1 <= self.fps <= 60:
            raise ConfigError(f"{where}.fps: must be in [1, 60], got {self.fps}")
        _positive(where, "dedupe_s", self.dedupe_s)
        _positive(where, "stall_s", self.stall_s)
        if not 16 <= self.max_payload <= 4096:
            raise ConfigError(f"{where}.max_payload: must be in [16, 4096]")


@dataclass(frozen=True)
class SsCardConfig:
    """The social-security card reader (PC/SC, needs the `sscard` extra and pcscd)."""

    enabled: bool = False
    reader_name: str = ""  # substring of the PC/SC reader name; "" = the first reader
    poll_interval_s: float = 0.2

    def validate(self, where: str) -> None:
        _positive(where, "poll_interval_s", self.poll_interval_s)


@dataclass(frozen=True)
class UploadConfig:
    """Journal upload batching."""

    interval_s: float = 2.0
    batch_size: int = 200

    def validate(self, where: str) -> None:
        _positive(where, "interval_s", self.interval_s)
        if not 1 <= self.batch_size <= 500:
            raise ConfigError(f"{where}.batch_size: must be in [1, 500], got {self.batch_size}")


@dataclass(frozen=True)
class HeartbeatConfig:
    """How often the kiosk reports its health."""

    interval_s: float = 30.0

    def validate(self, where: str) -> None:
        _positive(where, "interval_s", self.interval_s)


def load_bundle(path: Path) -> Bundle:
    """Read and check a bundle file (:mod:`core.bundle`); errors name the file and the key."""
    try:
        return decode_bundle(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read device bundle: {exc}") from exc
    except BundleError as exc:
        raise ConfigError(f"{path}: device bundle: {exc}") from exc


@dataclass(frozen=True)
class DeviceConfig:
    """Everything the kiosk agent needs, validated."""

    bundle: str = "/etc/siheyi/bundle.json"
    state_dir: str = "/var/lib/siheyi"
    server_url: str = ""
    reader: ReaderConfig = field(default_factory=ReaderConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    voice: VoiceConfig = field(default_factory=VoiceConfig)
    gpio: GpioConfig = field(default_factory=GpioConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    sscard: SsCardConfig = field(default_factory=SsCardConfig)
    upload: UploadConfig = field(default_factory=UploadConfig)
    heartbeat: HeartbeatConfig = field(default_factory=HeartbeatConfig)

    @classmethod
    def load(cls, path: Path) -> DeviceConfig:
        """Parse and validate a TOML file."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<config>") -> DeviceConfig:
        """Build from plain data (tests, the demo); same validation as a file."""
        config: DeviceConfig = _build(cls, data, source, "")
        config.validate(source)
        return config

    def validate(self, source: str) -> None:
        self.reader.validate(f"{source}: reader")
        self.verify.validate(f"{source}: verify")
        self.cache.validate(f"{source}: cache")
        self.voice.validate(f"{source}: voice")
        self.gpio.validate(f"{source}: gpio")
        self.camera.validate(f"{source}: camera")
        self.sscard.validate(f"{source}: sscard")
        self.upload.validate(f"{source}: upload")
        self.heartbeat.validate(f"{source}: heartbeat")

    def with_overrides(self, **changes: Any) -> DeviceConfig:
        return dataclasses.replace(self, **changes)


def _positive(where: str, key: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{where}.{key}: must be > 0, got {value}")


def _build(cls: type[Any], data: Any, source: str, prefix: str) -> Any:
    """Instantiate a config dataclass from a dict, rejecting unknown keys and wrong types."""
    where = prefix.rstrip(".") or "top level"
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {where}: expected a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: unknown key {prefix}{unknown[0]}")
    values: dict[str, Any] = {}
    for name, value in data.items():
        hint = hints[name]
        key = f"{prefix}{name}"
        if dataclasses.is_dataclass(hint) and isinstance(hint, type):
            values[name] = _build(hint, value, source, key + ".")
        else:
            values[name] = _coerce(hint, value, source, key)
    return cls(**values)


def _coerce(hint: Any, value: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is dict:
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise ConfigError(f"{source}: {key}: expected a table of strings")
        return dict(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{source}: {key}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {key}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key}: expected true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {key}: expected a string, got {value!r}")
        return value
    if isinstance(hint, types.UnionType):  # pragma: no cover - no such fields today
        raise ConfigError(f"{source}: {key}: unsupported type")
    raise ConfigError(f"{source}: {key}: unsupported type {hint!r}")
