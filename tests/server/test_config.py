from __future__ import annotations

import json
import re
from pathlib import Path
from typing import get_args

import pytest

from core.configdoc import config_table, splice
from core.outcomes import DEFAULT_PROMPTS
from core.policy import ColourRule
from server import config as config_module
from server.config import (
    IDENTITY_BOUNDS,
    LIMIT_BOUNDS,
    DecisionName,
    IdentitySettings,
    ServerConfig,
    ServerFile,
    load_config,
)
from server.errors import ConfigError

SERVER_DOC = Path(__file__).parents[2] / "docs" / "server.md"

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
        ("[policy.prompts]\nfault = 'x'\n", "[policy] prompts.fault: must be one of"),
        ('[sites."a"]\nwindow = 1\n', "[sites.a] window: unknown key"),
        (
            '[sites."east gate"]\nmin_doses = 11\n',
            '[sites."east gate"] min_doses: must be in [0, 10]',
        ),
        ('[sites." "]\n', 'sites." ": must be non-blank'),
        (
            "[policy.colours.blue]\npasses = true\nfoo = 1\n",
            "[policy.colours.blue] foo: unknown key",
        ),
        ("[policy.colours.blue]\nprompt = 'x'\n", "[policy.colours.blue] passes: required"),
        ("[policy.colours.blue]\npasses = 'yes'\n", "[policy.colours.blue] passes: expected true"),
        (
            "[policy.colours.blue]\npasses = false\nreason = 'Bad!'\n",
            "[policy.colours.blue] reason",
        ),
        ("[policy.colours.blue]\npasses = false\nreason = ''\n", "needs a reason code"),
        ('[sites.a.colours.red]\npasses = false\nreason = ""\n', "[sites.a.colours.red] reason"),
        ("[identity]\nreplay_window = 1.5\n", "[identity] replay_window: expected an integer"),
        ("[limits]\nadmin_inflight = 0\n", "[limits] admin_inflight: must be in [1, 1000], got 0"),
        ("[limits]\nadmin = 1\n", "[limits] admin: unknown key"),
        ("[sources]\ntimeout = 1\n", "[sources] timeout"),
        ("[extra]\n", ": extra: unknown key"),
        ("[server]\nport = '80'\n", "[server] port"),
        ("[server]\nport = 70000\n", "[server] port: must be in [0, 65535], got 70000"),
        ("[server]\nport = true\n", "[server] port: expected an integer, got True"),
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


def test_the_settings_table_is_generated_from_the_schema() -> None:
    """``make config-docs`` was run after the last schema change."""
    text = SERVER_DOC.read_text(encoding="utf-8")
    assert text == splice(text, config_table(ServerFile)), "run `make config-docs`"
    for key in ("server.port", "policy.min_doses", "policy.colours.<colour>.reason", "sites"):
        assert f"| `{key}` |" in text, key
    for key in ("sources.<name>.url", "sources.<name>.mapping", "limits.login_per_s"):
        assert f"| `{key}` |" in text, key
    for outcome in config_module.OUTCOMES:
        assert f"| `policy.prompts.{outcome}` |" in text, outcome


def test_defaults_are_the_documented_ones() -> None:
    text = SERVER_DOC.read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `([\w.]+)` \| [^|]+ \| `([^`]+)` \|", text, re.M))
    config = ServerConfig()
    flat = {
        "server.host": config.host,
        "server.port": config.port,
        "server.database": config.database,
        "policy.nat_window_hours": config.policy.nat_window_hours,
        "policy.min_doses": config.policy.min_doses,
        "sources.timeout_s": config.source_timeout_s,
        "sources.max_stale_s": config.source_max_stale_s,
        "sources.cache_size": config.source_cache_size,
        "snapshot.max_people": config.snapshot_max_people,
        "snapshot.cache_s": config.snapshot_cache_s,
    }
    flat |= {f"policy.prompts.{o}": config.policy.prompt(o) for o in config_module.OUTCOMES}
    flat |= {f"identity.{k}": getattr(config.identity, k) for k in IDENTITY_BOUNDS}
    flat |= {f"limits.{k}": getattr(config.limits, k) for k in LIMIT_BOUNDS}
    assert {k: json.loads(v) for k, v in rows.items() if k in flat} == flat


def test_bounds_tables_follow_the_schema() -> None:
    assert IDENTITY_BOUNDS["replay_window"] == ("i", 16, 1_000_000)
    assert LIMIT_BOUNDS["enrol_per_s"] == ("n", 0.1, 10_000)
    assert set(IDENTITY_BOUNDS) == set(IdentitySettings.__struct_fields__)
    assert set(get_args(DecisionName)) == set(config_module.OUTCOMES)


def test_colour_table_and_site_inheritance(tmp_path: Path) -> None:
    text = (
        "[policy.colours.blue]\npasses = true\nprompt = '蓝码通行'\n"
        "[sites.gate.colours.yellow]\npasses = true\n"
        "[sites.gate.colours.purple]\npasses = false\nreason = 'code_purple'\n"
    )
    config = load_config(write(tmp_path, text))
    assert config.policy.colours["blue"] == ColourRule(passes=True, reason="", prompt="蓝码通行")
    assert config.policy.colours["red"].reason == "code_not_green"
    gate = config.policy_for("gate")
    assert gate.colours["blue"].passes and gate.colours["yellow"].passes
    assert gate.colours["purple"] == ColourRule(passes=False, reason="code_purple")
    assert gate.nat_window_hours == config.policy.nat_window_hours


HTTP_SOURCE = """
[sources]
timeout_s = 0.4
max_stale_s = 600
cache_size = 10

[sources.health_code]
type = "http"
url = "https://hc.example/api/v1/code/{id_number}?key=${HC_KEY}"
headers = {Authorization = "Bearer ${HC_TOKEN}", X-Client = "siheyi"}
timeout_s = 0.25
[sources.health_code.mapping]
colour = "data.color"
reason = "data.reason"
[sources.health_code.values]
colour = {"0" = "green", "1" = "yellow", "2" = "red"}

[sources.nat]
type = "local"
timeout_s = 0.1

[sources.travel]
type = "http"
url = "http://travel.example/q"
method = "post"
body = {id = "{id_number}", kind = "trip"}
[sources.travel.mapping]
flagged = "risk.flag"

[snapshot]
max_people = 1000
cache_s = 0
"""

ENV = {"HC_TOKEN": "tok-123", "HC_KEY": "k9"}


def test_sources_and_snapshot_defaults() -> None:
    config = ServerConfig.default(database="x.db")
    assert config.source_max_stale_s == 6 * 3600
    assert config.source_cache_size == 100_000
    assert config.source("health_code").type == "local"
    assert config.timeout_for("travel") == 0.3
    assert (config.snapshot_max_people, config.snapshot_cache_s) == (50_000, 60.0)


def test_http_sources(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, HTTP_SOURCE), environ=ENV)
    assert (config.source_max_stale_s, config.source_cache_size) == (600, 10)
    hc = config.source("health_code")
    assert hc.type == "http" and hc.http is not None
    assert hc.http.url == "https://hc.example/api/v1/code/{id_number}?key=k9"
    assert dict(hc.http.headers) == {"Authorization": "Bearer tok-123", "X-Client": "siheyi"}
    assert dict(hc.http.mapping) == {"colour": "data.color", "reason": "data.reason"}
    assert hc.http.values["colour"]["1"] == "yellow"
    assert config.timeout_for("health_code") == 0.25
    assert config.timeout_for("nat") == 0.1
    assert config.timeout_for("vaccination") == 0.4  # [sources] timeout_s
    travel = config.source("travel").http
    assert travel is not None and travel.method == "POST"
    assert travel.body == {"id": "{id_number}", "kind": "trip"}
    assert (config.snapshot_max_people, config.snapshot_cache_s) == (1000, 0)
    # the expanded token never shows in a repr (config objects end up in logs and tracebacks)
    assert "tok-123" not in repr(config)


def test_missing_environment_variable_names_key_not_value(tmp_path: Path) -> None:
    path = write(tmp_path, HTTP_SOURCE)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={"HC_KEY": "k9"})
    message = str(info.value)
    assert str(path) in message
    assert "[sources.health_code] headers.Authorization" in message
    assert "HC_TOKEN is not set" in message


HTTP_OK = '[sources.nat]\ntype = "http"\nurl = "http://n/{id_number}"\n'
MAP_OK = '[sources.nat.mapping]\nresult = "r"\nsampled_at = "s"\n'


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[sources]\nmax_stale_s = 0\n", "[sources] max_stale_s"),
        ("[sources]\ncache_size = -1\n", "[sources] cache_size"),
        ("[sources.fingerprint]\n", "[sources] fingerprint"),
        ('[sources.nat]\ntype = "ftp"\n', "[sources.nat] type"),
        ("[sources.nat]\ntimeout_s = 0\n", "[sources.nat] timeout_s"),
        ('[sources.nat]\nurl = "http://x/{id_number}"\n', "[sources.nat] url"),
        ('[sources.nat]\ntype = "http"\n', "[sources.nat] url"),
        ('[sources.nat]\ntype = "http"\nurl = "ftp://n/{id_number}"\n', "[sources.nat] url"),
        ('[sources.nat]\ntype = "http"\nurl = "http://n/{id}"\n', "[sources.nat] url"),
        ('[sources.nat]\ntype = "http"\nurl = "http://n/all"\n' + MAP_OK, "[sources.nat] url"),
        (HTTP_OK + 'method = "PUT"\n' + MAP_OK, "[sources.nat] method"),
        (HTTP_OK + "body = {a = 1}\n" + MAP_OK, "[sources.nat] body"),
        (HTTP_OK + '[sources.nat.headers]\n"Bad Name" = "x"\n' + MAP_OK, 'headers."Bad Name"'),
        ("[sources.nat]\nbogus = 1\n", "[sources.nat] bogus: unknown key"),
        (HTTP_OK + MAP_OK + "[sources.nat.values]\nresult = {x = [1]}\n", "values.result.x"),
        (
            HTTP_OK + MAP_OK + "[sources.nat.values]\nresult = 3\n",
            "values.result: expected a table",
        ),
        (
            HTTP_OK + 'method = "POST"\nbody = {at = 2024-01-01}\n' + MAP_OK,
            "[sources.nat] body: cannot be sent as JSON",
        ),
        (HTTP_OK, "[sources.nat.mapping] result"),
        (HTTP_OK + '[sources.nat.mapping]\nresult = "r"\n', "[sources.nat.mapping] sampled_at"),
        (HTTP_OK + MAP_OK + 'colour = "c"\n', "[sources.nat.mapping] colour"),
        (HTTP_OK + '[sources.nat.mapping]\nresult = "a..b"\nsampled_at = "s"\n', "mapping] result"),
        (HTTP_OK + MAP_OK + "[sources.nat.values]\nlab = {x = 'y'}\n", "[sources.nat.values] lab"),
        ("[snapshot]\nmax_people = 0\n", "[snapshot] max_people"),
        ("[snapshot]\ncache_s = -1\n", "[snapshot] cache_s"),
        ("[snapshot]\nsize = 1\n", "[snapshot] size"),
    ],
)
def test_source_errors_name_file_and_key(tmp_path: Path, text: str, names: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(path) in str(info.value)
    assert names in str(info.value)


def test_minimal_http_source_is_valid(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, HTTP_OK + MAP_OK), environ={})
    nat = config.source("nat").http
    assert nat is not None and nat.method == "GET" and dict(nat.headers) == {}
