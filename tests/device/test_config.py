"""Kiosk configuration is checked once, and errors name the file and the key."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any, get_args

import pytest

from core.configdoc import config_table, splice
from core.outcomes import DEFAULT_PROMPTS, Outcome
from device.config import DeviceConfig, OutcomeName, load_bundle
from device.errors import ConfigError

README = Path(__file__).resolve().parents[2] / "README.md"
KIOSK_DOC = README.parent / "docs" / "kiosk-config.md"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "kiosk.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_defaults_are_a_pi_with_a_usb_reader() -> None:
    c = DeviceConfig()
    assert c.reader.url == "/dev/ttyUSB0" and c.reader.baudrate == 115200
    assert c.verify.deadline_s == 1.2
    assert c.voice.prompt("pass") == "绿码通行" and c.voice.prompt("fault").startswith("设备故障")


def test_file_overrides_and_prompt_override(tmp_path: Path) -> None:
    c = DeviceConfig.load(
        write(
            tmp_path,
            'state_dir = "/tmp/x"\n[reader]\nurl = "socket://127.0.0.1:7000"\n'
            '[verify]\ndeadline_s = 0.8\n[voice.prompts]\ncheck = "请核查"\n',
        )
    )
    assert c.reader.url == "socket://127.0.0.1:7000" and c.verify.deadline_s == 0.8
    assert c.voice.prompt("check") == "请核查" and c.voice.prompt("pass") == "绿码通行"


@pytest.mark.parametrize(
    "text,needle",
    [
        ("[reader]\nurll = 'x'\n", "reader.urll: unknown key"),
        ("[voice.prompts]\npass = 3\n", "voice.prompts.pass: expected a string, got 3"),
        ("[camera]\nsource = ''\n", "camera.source: must be non-empty"),
        ("[verify]\ncircuit_max_cooldown_s = 1.0\n", "verify.circuit_max_cooldown_s"),
        ("[cache]\nsnapshot_interval_s = 5\n", "cache.snapshot_interval_s: 0 or in [10, 86400]"),
        ("[reader]\nwiring = 'usb'\n", 'reader.wiring: must be one of "direct", "mcu"'),
        ("bogus = 1\n", "bogus: unknown key"),
        ("[verify]\ndeadline_s = 'fast'\n", "verify.deadline_s: expected a number"),
        ("[verify]\ndeadline_s = 5\n", "verify.deadline_s: must be in [0.05, 2.5], got 5"),
        ("[gpio]\nrelay_pin = 27\n", "pins must differ"),
        ("[reader]\nbaudrate = 12345\n", "reader.baudrate"),
        ("[voice.prompts]\nhello = 'x'\n", "voice.prompts.hello: must be one of"),
        ("[upload]\nbatch_size = 0\n", "upload.batch_size"),
        ("[gpio]\nenabled = 'yes'\n", "gpio.enabled: expected true or false"),
        ("reader = 3\n", "reader: expected a table"),
        ("not toml [", "invalid TOML"),
        ("[voice]\nplayer = 'bogus'\n", "voice.player"),
        ("[voice]\nplayer = 'file:'\n", "voice.player"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, needle: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        DeviceConfig.load(path)
    assert str(path) in str(err.value) and needle in str(err.value)


def test_bundle_checks(tmp_path: Path) -> None:
    good = {
        "device_id": "k-1",
        "private_key": "00" * 32,
        "serial": "SN",
        "site": "a",
        "server_url": "http://x",
        "fleet_key": "00" * 32,
        "extra": "ignored",
    }
    p = tmp_path / "b.json"
    p.write_text(json.dumps(good))
    assert load_bundle(p).site_key_bytes == bytes(32)
    for broken in (
        {**good, "fleet_key": "zz"},
        {k: v for k, v in good.items() if k != "private_key"},
    ):
        p.write_text(json.dumps(broken))
        with pytest.raises(ConfigError, match=str(p)):
            load_bundle(p)


def test_every_key_of_the_readme_example_is_a_real_key_with_that_default() -> None:
    """The README's annotated example is a valid kiosk.toml holding the defaults."""
    readme = README.read_text(encoding="utf-8")
    block = readme[readme.index("## Kiosk configuration") :]
    example = block[block.index("```toml\n") + 8 : block.index("```\n", block.index("```toml"))]
    assert DeviceConfig.from_dict(tomllib.loads(example), "README.md") == DeviceConfig()
    assert "(docs/kiosk-config.md)" in block


def test_the_reference_table_is_generated_from_the_schema() -> None:
    """``make config-docs`` was run after the last schema change."""
    text = KIOSK_DOC.read_text(encoding="utf-8")
    assert text == splice(text, config_table(DeviceConfig)), "run `make config-docs`"
    documented = set(re.findall(r"^\| `([^`]+)` \|", text, re.M))
    keys = {"bundle", "state_dir", "server_url"}
    sections = ("reader", "verify", "cache", "voice", "gpio", "camera", "sscard", "upload")
    for section in (*sections, "commands", "update"):
        keys |= {f"{section}.{name}" for name in vars(getattr(DeviceConfig(), section))}
    keys |= {"heartbeat.interval_s"} | {f"voice.prompts.{o}" for o in DEFAULT_PROMPTS}
    voice = DeviceConfig().voice
    keys |= {f"voice.languages.{card}" for card in voice.languages}
    keys |= {f"voice.language_voices.{lang}" for lang in voice.language_voices}
    keys |= {f"voice.volume_schedule[].{name}" for name in ("start", "end", "gain_db")}
    assert keys - {"voice.prompts", "voice.languages", "voice.language_voices"} == documented


def test_defaults_are_the_documented_ones() -> None:
    text = KIOSK_DOC.read_text(encoding="utf-8")
    c = DeviceConfig()
    for key, default in re.findall(r"^\| `([^`]+)` \| [^|]+ \| `([^`]+)` \|", text, re.M):
        section, _, name = key.rpartition(".")
        table: Any = c
        for part in filter(None, section.split(".")):
            table = getattr(table, part)
        value = table[name] if isinstance(table, dict) else getattr(table, name)
        assert json.loads(default) == value, key


def test_prompt_outcomes_are_the_core_outcomes() -> None:
    assert set(get_args(OutcomeName)) == {o.value for o in Outcome}


def test_a_loaded_file_keeps_replace_working() -> None:
    """The agent and the tests derive variants with dataclasses.replace."""
    c = DeviceConfig.from_dict({"heartbeat": {"interval_s": 5}})
    assert replace(c.heartbeat, interval_s=0.3).interval_s == 0.3
    assert c.with_overrides(server_url="http://x").server_url == "http://x"
    assert isinstance(c.heartbeat.interval_s, float)


def test_unencrypted_or_unpinned_server_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    from device.runtime import warn_about_transport

    warn_about_transport("http://10.0.0.5:8080", "")
    warn_about_transport("https://kiosk.example", "")
    warn_about_transport("https://kiosk.example", "-----BEGIN CERTIFICATE-----\n...")
    warn_about_transport("http://127.0.0.1:8080", "")  # the demo on one machine
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "plain HTTP" in messages[0] and "pins no fleet CA" in messages[1]


def test_the_second_language_table_overrides_per_card_type() -> None:
    """A site that turns English on for permits keeps it for residence cards."""
    voice = DeviceConfig.from_dict({"voice": {"languages": {"J": "en"}}}).voice
    assert voice.card_languages() == {"I": "en", "Y": "en", "J": "en"}
    voice = DeviceConfig.from_dict({"voice": {"languages": {"I": "", "Y": ""}}}).voice
    assert voice.card_languages() == {"I": "", "Y": "", "J": ""}
    assert DeviceConfig().voice.voices_by_language() == {"en": "gmw/en-us"}
    with pytest.raises(ConfigError, match=r"voice\.languages: no espeak voice for 'en'"):
        DeviceConfig.from_dict({"voice": {"language_voices": {"en": " "}}})
    with pytest.raises(ConfigError, match=r"voice\.languages\.I"):
        DeviceConfig.from_dict({"voice": {"languages": {"I": "fr"}}})


def test_the_config_patterns_are_the_voice_modules_own() -> None:
    """The schema refuses exactly what the clip library, the schedule, a voice pack and the
    remote settings refuse: one pattern each, in core."""
    from core import settings, voicepack
    from device import config
    from device.acting import clips, volume

    assert config._CLIP_KEY is voicepack.KEY_PATTERN and clips._KEY.pattern is config._CLIP_KEY
    assert config._HHMM is settings.HHMM_PATTERN and volume._HHMM.pattern is config._HHMM


def test_relative_clip_paths_are_taken_from_the_config_files_directory(tmp_path: Path) -> None:
    """A clip beside kiosk.toml is found whatever directory the agent starts in."""
    path = write(tmp_path, '[voice.clips]\npass = "clips/pass.wav"\ncheck = "/srv/check.wav"\n')
    clips = DeviceConfig.load(path).voice.clips
    assert clips == {"pass": str(tmp_path / "clips" / "pass.wav"), "check": "/srv/check.wav"}
