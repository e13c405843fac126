"""Kiosk configuration is checked once, and errors name the file and the key."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from device.config import DeviceConfig, load_bundle
from device.errors import ConfigError

README = Path(__file__).resolve().parents[2] / "README.md"


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
        ("[reader]\nurll = 'x'\n", "unknown key reader.urll"),
        ("[verify]\ndeadline_s = 'fast'\n", "verify.deadline_s: expected a number"),
        ("[verify]\ndeadline_s = 5\n", "verify.deadline_s"),
        ("[gpio]\nrelay_pin = 27\n", "pins must differ"),
        ("[reader]\nbaudrate = 12345\n", "reader.baudrate"),
        ("[voice.prompts]\nhello = 'x'\n", "unknown outcome"),
        ("[upload]\nbatch_size = 0\n", "upload.batch_size"),
        ("[gpio]\nenabled = 'yes'\n", "gpio.enabled: expected true or false"),
        ("reader = 3\n", "reader: expected a table"),
        ("not toml [", "not valid TOML"),
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


def test_every_config_key_is_documented_in_the_readme() -> None:
    readme = README.read_text(encoding="utf-8")
    block = readme[readme.index("## Kiosk configuration") :]
    documented = set(re.findall(r"^(\w+) = ", block, re.M))
    documented |= set(re.findall(r"^\[\w+\.(\w+)\]", block, re.M))  # [voice.prompts]
    c = DeviceConfig()
    keys = {"bundle", "state_dir", "server_url"}
    sections = ("reader", "verify", "cache", "voice", "gpio", "camera", "sscard", "upload")
    sections += ("heartbeat",)
    for section in sections:
        keys |= set(vars(getattr(c, section)))
    keys |= set(c.voice.prompts)
    assert keys - documented == set()


def test_unencrypted_or_unpinned_server_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    from device.runtime import warn_about_transport

    warn_about_transport("http://10.0.0.5:8080", "")
    warn_about_transport("https://kiosk.example", "")
    warn_about_transport("https://kiosk.example", "-----BEGIN CERTIFICATE-----\n...")
    warn_about_transport("http://127.0.0.1:8080", "")  # the demo on one machine
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "plain HTTP" in messages[0] and "pins no fleet CA" in messages[1]
