from __future__ import annotations

from pathlib import Path

import pytest

from server import config as config_module
from server.config import DEFAULT_PROMPTS, ServerConfig, load_config
from server.errors import ConfigError

GOOD = """
[server]
host = "0.0.0.0"
port = 9000
database = "data/siheyi.db"

[policy]
nat_window_hours = 72
min_doses = 1

[policy.prompts]
pass = "请通行"

[sites."east-gate"]
min_doses = 3
nat_window_hours = 24.5

[sites."east-gate".prompts]
check = "请到人工通道"

[sources]
timeout_s = 0.5
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "siheyi.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults() -> None:
    config = ServerConfig.default(database="x.db")
    assert (config.host, config.port, config.database) == ("127.0.0.1", 8080, "x.db")
    assert config.policy.nat_window_hours == 48
    assert config.policy.min_doses == 0
    assert dict(config.policy.prompts) == dict(DEFAULT_PROMPTS)
    assert config.source_timeout_s == 0.3
    assert config.policy_for("anywhere") is config.policy


def test_full_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert (config.host, config.port) == ("0.0.0.0", 9000)
    assert config.database == str(tmp_path / "data" / "siheyi.db")
    assert config.policy.nat_window_hours == 72
    assert config.policy.prompt("pass") == "请通行"
    east = config.policy_for("east-gate")
    # site overrides its own keys and inherits the rest from [policy]
    assert (east.min_doses, east.nat_window_hours) == (3, 24.5)
    assert east.prompt("check") == "请到人工通道"
    assert east.prompt("pass") == "请通行"
    assert east.prompt("nat_expired") == DEFAULT_PROMPTS["nat_expired"]
    assert config.source_timeout_s == 0.5


def test_empty_file_is_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""))
    assert config.port == 8080
    assert config.database == str(tmp_path / "siheyi.db")


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[server]\nprot = 1\n", "[server] prot"),
        ("[policy]\nmin_dose = 1\n", "[policy] min_dose"),
        ("[policy.prompts]\nfault = 'x'\n", "[policy] prompts.fault"),
        ('[sites."a"]\nwindow = 1\n', '[sites."a"] window'),
        ("[sources]\ntimeout = 1\n", "[sources] timeout"),
        ("[extra]\n", "extra"),
        ("[server]\nport = '80'\n", "[server] port"),
        ("[server]\nport = 70000\n", "[server] port"),
        ("[server]\nport = true\n", "[server] port"),
        ("[policy]\nnat_window_hours = 0\n", "[policy] nat_window_hours"),
        ("[policy]\nmin_doses = -1\n", "[policy] min_doses"),
        ("[policy.prompts]\npass = ''\n", "[policy] prompts.pass"),
        ("[sources]\ntimeout_s = -0.1\n", "[sources] timeout_s"),
        ("policy = 3\n", "[policy]"),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, names: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert names in str(info.value)


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(write(tmp_path, "[server\n"))


def test_every_setting_is_documented() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "server.md").read_text(encoding="utf-8")
    keys = [f"server.{k}" for k in config_module._SERVER_KEYS]
    keys += [f"policy.{k}" for k in config_module._POLICY_KEYS - {"prompts"}]
    keys += [f"sources.{k}" for k in config_module._SOURCES_KEYS]
    for key in keys:
        assert f"| `{key}` |" in doc, key
    prompts_row = next(line for line in doc.splitlines() if line.startswith("| `policy.prompts."))
    for outcome in config_module.OUTCOMES:
        assert f"`{outcome}`" in prompts_row or f"prompts.{outcome}`" in prompts_row, outcome
