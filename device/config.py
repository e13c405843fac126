"""Kiosk agent configuration: one TOML file, validated once at start-up.

A kiosk in the field cannot ask anyone what a typo meant, so every key is checked before the
agent starts, unknown keys are refused, and every error names the file and the dotted key
(ESPHome style). Defaults are what a Raspberry Pi kiosk with a USB reader needs.

The classes below are the schema: types, defaults, bounds and descriptions are written once,
here; :mod:`core.configschema` checks a file against them and :mod:`core.configdoc` turns them
into docs/kiosk-config.md. They stay frozen dataclasses (not Structs) because the agent and the
tests derive variants with ``dataclasses.replace``. Only rules that tie two keys together, or
parse a value's inside, are code (:meth:`DeviceConfig.check`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, cast

from msgspec import Meta, Struct

from core import configschema
from core.bundle import Bundle, decode_bundle
from core.errors import BundleError
from core.outcomes import DEFAULT_PROMPTS, OutcomeName
from core.settings import GAIN_DB_RANGE, HHMM_PATTERN
from core.voicepack import KEY_PATTERN
from device.acting.languages import (
    DEFAULT_CARD_LANGUAGES,
    DEFAULT_LANGUAGE_RATE,
    DEFAULT_LANGUAGE_VOICES,
    LanguageName,
    config_problems,
)
from device.errors import ConfigError

#: Every outcome the kiosk speaks a prompt for (core.outcomes.Outcome; a test keeps them equal).
PLAYERS = (
    "aplay, aplay:DEVICE, null, file:DIR (a copy of each prompt: DIR/000001-pass.wav …) or mock"
)


#: Spoken by the "speak test prompt" command unless configured otherwise.
TEST_PROMPT = "语音测试"

#: A duration in seconds; fields add their own description (and tighter bounds).
Seconds = Annotated[float, Meta(gt=0)]


@dataclass(frozen=True)
class ReaderConfig:
    """The ID-card reader: where it is and how patient to be with it."""

    url: Annotated[
        str, Meta(description="any pyserial URL: /dev/ttyUSB0, /dev/pts/N, socket://host:port")
    ] = "/dev/ttyUSB0"
    baudrate: Annotated[
        Literal[9600, 19200, 38400, 57600, 115200], Meta(description="the SAM's serial speed")
    ] = 115200
    wiring: Annotated[
        Literal["direct", "mcu"],
        Meta(
            description="direct: the SAM reader on this port; mcu: an MCU running "
            "firmware_bridge on this port (it also drives the relay)"
        ),
    ] = "direct"
    poll_interval_s: Annotated[Seconds, Meta(description="pause between find-card polls")] = 0.1
    command_timeout_s: Annotated[
        Seconds, Meta(description="reset/status/find/select reply timeout")
    ] = 0.2
    read_timeout_s: Annotated[
        Seconds, Meta(description="read-base reply timeout (1295 bytes: 112 ms at 115200)")
    ] = 3.0
    reconnect_interval_s: Annotated[
        Seconds, Meta(description="how often a vanished reader is reopened")
    ] = 0.5


@dataclass(frozen=True)
class VerifyConfig:
    """How long a tap may wait for the server before the kiosk decides alone."""

    deadline_s: Annotated[
        float, Meta(ge=0.05, le=2.5, description="credential complete -> decision, server or not")
    ] = 1.2
    circuit_threshold: Annotated[
        int, Meta(ge=1, le=100, description="consecutive server failures that open the circuit")
    ] = 3
    circuit_cooldown_s: Annotated[
        Seconds, Meta(description="first probe delay while open (doubles per failed probe)")
    ] = 2.0
    circuit_max_cooldown_s: Annotated[
        Seconds, Meta(description="longest probe delay (>= circuit_cooldown_s)")
    ] = 30.0
    clock_tolerance_s: Annotated[
        Seconds, Meta(description="local vs server clock difference still trusted")
    ] = 120.0


@dataclass(frozen=True)
class CacheConfig:
    """The kiosk's pseudonymised offline cache."""

    enabled: Annotated[bool, Meta(description="keep facts for offline decisions")] = True
    max_age_s: Annotated[
        float, Meta(ge=60, le=1209600, description="hard maximum age of an entry (60 s .. 14 days)")
    ] = 86400.0
    max_entries: Annotated[int, Meta(ge=100, le=5_000_000, description="people remembered")] = (
        200_000
    )
    snapshot_interval_s: Annotated[
        float,
        Meta(
            ge=0,
            le=86400,
            description="fetch the site's signed snapshot this often (0: never; else at least 10)",
        ),
    ] = 900.0


#: "HH:MM" on a 24-hour clock, and a `voice.clips` key (an outcome, or an outcome and a
#: language such as `pass.en`): the patterns the voice modules themselves check.
_HHMM = HHMM_PATTERN
_CLIP_KEY = KEY_PATTERN


class VolumeWindow(Struct, frozen=True, forbid_unknown_fields=True):
    """One window of `voice.volume_schedule`, in the kiosk's local time.

    A Struct, not a dataclass like the sections: core.configschema refuses a dataclass's
    unknown keys only where it is a table of its own, not as an entry of an array.
    """

    start: Annotated[str, Meta(pattern=_HHMM, description='"HH:MM" local time, included')]
    end: Annotated[
        str,
        Meta(
            pattern=_HHMM,
            description='"HH:MM", excluded; before `start`: the window wraps midnight; '
            "equal to `start`: all day",
        ),
    ]
    gain_db: Annotated[
        float,
        Meta(
            ge=GAIN_DB_RANGE[0],
            le=0,
            description="gain the player applies, -20 to 0 (quieter, never silent; for "
            "louder prompts, raise `loudness_lufs`)",
        ),
    ]


@dataclass(frozen=True)
class VoiceConfig:
    """Prompt synthesis and playback."""

    voice: Annotated[str, Meta(description="espeak-ng voice used by pyttsx3")] = "sit/cmn"
    rate: Annotated[int, Meta(ge=80, le=400, description="words per minute")] = 170
    player: Annotated[str, Meta(description=PLAYERS)] = "aplay"
    cache_dir: Annotated[str, Meta(description='"": `<state_dir>/prompts`')] = ""
    prompts: Annotated[dict[OutcomeName, str], Meta(description="text spoken per outcome")] = field(
        default_factory=lambda: cast(dict[OutcomeName, str], dict(DEFAULT_PROMPTS))
    )

    clips: Annotated[
        dict[Annotated[str, Meta(pattern=_CLIP_KEY)], str],
        Meta(
            description="a recorded clip per outcome (`pass`) or outcome and language "
            '(`"pass.en"`): a WAV, FLAC or OGG file (absolute, or relative to this file) of '
            "at most 2.5 s, played instead of the synthesised prompt; a bad file is logged and "
            "synthesis is used"
        ),
    ] = field(default_factory=dict)
    loudness_lufs: Annotated[
        float,
        Meta(
            ge=-40,
            le=-5,
            description="integrated loudness (EBU R128, LUFS) every prompt, synthesised or "
            "recorded, is set to",
        ),
    ] = -20.0
    peak_dbfs: Annotated[
        float, Meta(ge=-20, le=0, description="sample-peak ceiling of every prompt (dBFS)")
    ] = -1.0
    volume_schedule: Annotated[
        list[VolumeWindow],
        Meta(
            description="quieter windows the player applies, e.g. "
            '`[{start = "22:00", end = "07:00", gain_db = -10}]`; where windows overlap the '
            "first listed wins",
        ),
    ] = field(default_factory=list)
    languages: Annotated[
        dict[Literal["I", "Y", "J"], LanguageName],
        Meta(
            description='second language after the Chinese prompt for this card type ("": '
            "Chinese only); skipped where the pair would play longer than 3 s"
        ),
    ] = field(default_factory=lambda: cast(dict[Any, LanguageName], dict(DEFAULT_CARD_LANGUAGES)))
    language_voices: Annotated[
        dict[Literal["en"], str],
        Meta(description='espeak-ng voice per second language (pyttsx3\'s id, e.g. "gmw/en-us")'),
    ] = field(default_factory=lambda: cast(dict[Literal["en"], str], dict(DEFAULT_LANGUAGE_VOICES)))
    language_rate: Annotated[
        int, Meta(ge=80, le=400, description="words per minute of the second language")
    ] = DEFAULT_LANGUAGE_RATE

    def prompt(self, outcome: str) -> str:
        """The configured text for an outcome, falling back to the built-in default."""
        return cast(Mapping[str, str], self.prompts).get(outcome) or DEFAULT_PROMPTS[outcome]

    def card_languages(self) -> Mapping[str, str]:
        """Card type → second language ("": Chinese only); a card type the file leaves out
        keeps its default, as an outcome left out of ``prompts`` keeps its words."""
        return {**DEFAULT_CARD_LANGUAGES, **cast(Mapping[str, str], self.languages)}

    def voices_by_language(self) -> Mapping[str, str]:
        """Second language → espeak-ng voice (defaults for the languages left out)."""
        return {**DEFAULT_LANGUAGE_VOICES, **cast(Mapping[str, str], self.language_voices)}


_Pin = Annotated[int, Meta(ge=0, le=27, description="BCM number")]


@dataclass(frozen=True)
class GpioConfig:
    """Relay, lights and buzzer pins (BCM numbering)."""

    enabled: Annotated[bool, Meta(description="drive the relay and lights on this Pi")] = True
    pin_factory: Annotated[
        Literal["", "mock", "lgpio", "rpigpio", "pigpio", "native"],
        Meta(description='gpiozero pin factory ("": its default)'),
    ] = ""
    relay_pin: _Pin = 17
    green_led_pin: _Pin = 27
    red_led_pin: _Pin = 22
    buzzer_pin: _Pin = 23
    relay_pulse_s: Annotated[
        float, Meta(ge=0.1, le=30, description="how long the gate relay stays closed on a pass")
    ] = 3.0
    active_high: Annotated[bool, Meta(description="relay and lights switch on high")] = True


@dataclass(frozen=True)
class CameraConfig:
    """The QR camera (health codes and signed passes)."""

    enabled: Annotated[bool, Meta(description="read QR codes from a camera")] = False
    source: Annotated[
        str,
        Meta(
            min_length=1,
            description="device index, /dev/videoN, a video file or an rtsp:// / http:// URL",
        ),
    ] = "0"
    width: Annotated[int, Meta(ge=160, le=1920, description="frame width")] = 640
    height: Annotated[int, Meta(ge=120, le=1080, description="frame height")] = 480
    fps: Annotated[float, Meta(ge=1, le=60, description="frames per second")] = 15.0
    dedupe_s: Annotated[
        Seconds, Meta(description="the same code seen again within this window is one credential")
    ] = 3.0
    max_payload: Annotated[
        int, Meta(ge=16, le=4096, description="longer codes are refused (invalid_credential)")
    ] = 1024
    stall_s: Annotated[
        Seconds, Meta(description="no frame for this long: the camera is reopened")
    ] = 3.0
    decoder: Annotated[
        Literal["auto", "zxing", "pyzbar"],
        Meta(
            description='"auto" or "zxing": zxing-cpp first where installed, pyzbar as the '
            'fallback; "pyzbar": pyzbar alone (`kiosk doctor` shows what is used)'
        ),
    ] = "auto"


@dataclass(frozen=True)
class SsCardConfig:
    """The social-security card reader (PC/SC, needs the `sscard` extra and pcscd)."""

    enabled: Annotated[bool, Meta(description="needs `pip install '.[sscard]'` and pcscd")] = False
    reader_name: Annotated[
        str, Meta(description='part of the PC/SC reader\'s name; "": the first reader')
    ] = ""
    poll_interval_s: Annotated[Seconds, Meta(description="pause between card polls")] = 0.2


@dataclass(frozen=True)
class UploadConfig:
    """Journal upload batching."""

    interval_s: Annotated[
        Seconds, Meta(description="journal upload period (also right after every tap)")
    ] = 2.0
    batch_size: Annotated[int, Meta(ge=1, le=500, description="events per POST")] = 200


@dataclass(frozen=True)
class HeartbeatConfig:
    """How often the kiosk reports its health."""

    interval_s: Annotated[Seconds, Meta(description="health report period")] = 30.0


@dataclass(frozen=True)
class CommandsConfig:
    """Guards' commands over the command channel (signed by the server, docs/commands.md)."""

    enabled: Annotated[
        bool, Meta(description="hold the command socket (remote gate open, reload, speak test)")
    ] = True
    gate_prompt: Annotated[
        str, Meta(max_length=100, description='spoken when a guard opens the gate ("": silence)')
    ] = ""
    test_prompt: Annotated[
        str, Meta(min_length=1, max_length=100, description='spoken by the "speak test" command')
    ] = TEST_PROMPT


@dataclass(frozen=True)
class UpdateConfig:
    """Software updates (docs/updates.md): wheels signed with the fleet's release key."""

    enabled: Annotated[bool, Meta(description="install the releases the server offers")] = True
    release_key: Annotated[
        str,
        Meta(
            pattern="^([0-9a-f]{64})?$",
            description='public release key, 64 hex digits ("": every offer is refused)',
        ),
    ] = ""
    root: Annotated[
        str, Meta(min_length=1, description="holds releases/, current and previous")
    ] = "/opt/siheyi"
    wheelhouse: Annotated[
        str, Meta(description="dependency wheels for pip --no-index --find-links")
    ] = "/opt/siheyi/wheelhouse"
    index_url: Annotated[
        str, Meta(description='a package index for dependencies instead ("": the wheelhouse only)')
    ] = ""
    python: Annotated[
        str, Meta(min_length=1, description="the interpreter a release's venv is made with")
    ] = "/usr/bin/python3"
    idle_s: Annotated[
        float,
        Meta(ge=0, le=3600, description="no tap for this long before switching and restarting"),
    ] = 10.0
    install_timeout_s: Annotated[
        float, Meta(ge=10, le=7200, description="an install still running after this is killed")
    ] = 900.0


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

    bundle: Annotated[
        str,
        Meta(
            description="written by `kiosk provision add` (mode 0600); beside the state, "
            "since key rotation writes next to it and /etc is read-only to the agent"
        ),
    ] = "/var/lib/siheyi/bundle.json"
    state_dir: Annotated[
        str, Meta(description="journal.db, the cache and the prompt cache live here")
    ] = "/var/lib/siheyi"
    server_url: Annotated[str, Meta(description="overrides the bundle's server URL when set")] = ""
    reader: ReaderConfig = field(default_factory=ReaderConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    voice: VoiceConfig = field(default_factory=VoiceConfig)
    gpio: GpioConfig = field(default_factory=GpioConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    sscard: SsCardConfig = field(default_factory=SsCardConfig)
    upload: UploadConfig = field(default_factory=UploadConfig)
    heartbeat: HeartbeatConfig = field(default_factory=HeartbeatConfig)
    commands: CommandsConfig = field(default_factory=CommandsConfig)
    update: UpdateConfig = field(default_factory=UpdateConfig)

    @classmethod
    def load(cls, path: Path) -> DeviceConfig:
        """Parse and validate a TOML file."""
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise configschema.unreadable(path, exc, ConfigError) from exc
        config = cls.from_dict(configschema.parse_toml(raw, str(path), ConfigError), str(path))
        return config.with_clips_from(path.parent)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<config>") -> DeviceConfig:
        """Build from plain data (tests, the demo); same validation as a file."""
        config = configschema.load(data, cls, source, ConfigError)
        config.check(source)
        return config

    def check(self, source: str) -> None:
        """The rules that tie keys together, which a per-key schema cannot say."""
        verify, gpio = self.verify, self.gpio
        if verify.circuit_max_cooldown_s < verify.circuit_cooldown_s:
            raise ConfigError(
                f"{source}: verify.circuit_max_cooldown_s: must be >= circuit_cooldown_s"
            )
        if 0 < self.cache.snapshot_interval_s < 10:
            raise ConfigError(f"{source}: cache.snapshot_interval_s: 0 or in [10, 86400]")
        kind, _, arg = self.voice.player.partition(":")
        if kind not in ("aplay", "null", "mock", "file") or (kind == "file" and not arg):
            raise ConfigError(
                f"{source}: voice.player: expected {PLAYERS}, got {self.voice.player!r}"
            )
        voice = self.voice
        for problem in config_problems(voice.card_languages(), voice.voices_by_language()):
            raise ConfigError(f"{source}: voice.languages: {problem}")
        pins = [gpio.relay_pin, gpio.green_led_pin, gpio.red_led_pin, gpio.buzzer_pin]
        if len(set(pins)) != len(pins):
            raise ConfigError(f"{source}: gpio: relay, LED and buzzer pins must differ, got {pins}")

    def with_clips_from(self, directory: Path) -> DeviceConfig:
        """Relative ``voice.clips`` paths taken from ``directory`` (the file's own), so a
        clip beside kiosk.toml is found whatever directory the agent was started in."""
        clips = {key: str(directory / path) for key, path in self.voice.clips.items()}
        return self.with_overrides(voice=dataclasses.replace(self.voice, clips=clips))

    def with_overrides(self, **changes: Any) -> DeviceConfig:
        """A copy with some sections or keys replaced (tests, the demo); not re-checked."""
        return dataclasses.replace(self, **changes)
