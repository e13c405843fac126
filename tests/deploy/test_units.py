"""The systemd units pass ``systemd-analyze verify`` and hold the plan's directives; the
install script passes shellcheck.

``verify`` insists that every ``ExecStart`` binary exists, so it checks copies of the units
whose ``/opt/siheyi`` paths point into a temporary tree holding stand-in executables; any
warning (an unknown key, a bad value) fails the test, not just a non-zero exit.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "deploy" / "systemd"
AGENT, SERVER = "siheyi-agent.service", "siheyi-server.service"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package {_PACKAGES[name]})")
    return path


_PACKAGES = {"systemd-analyze": "systemd", "shellcheck": "shellcheck"}


def _directives(unit: str) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit file, by key, in order (sections ignored)."""
    found: dict[str, list[str]] = {}
    for line in (UNITS / unit).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = _tool("systemd-analyze")
    opt = tmp_path / "opt" / "siheyi"
    for stand_in in (opt / "current" / "bin" / "kiosk", opt / "bin" / "siheyi-boot-guard"):
        stand_in.parent.mkdir(parents=True, exist_ok=True)
        stand_in.write_text("#!/bin/sh\n")
        stand_in.chmod(0o755)
    copies = []
    for unit in (AGENT, SERVER):
        text = (UNITS / unit).read_text().replace("/opt/siheyi", str(opt))
        (tmp_path / unit).write_text(text)
        copies.append(str(tmp_path / unit))
    result = subprocess.run(
        [analyze, "verify", "--man=no", *copies],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # warnings too (unknown keys, bad values)


def test_verify_catches_a_misspelt_directive(tmp_path: Path) -> None:
    """The check above can fail: a unit with a typo does not pass it."""
    analyze = _tool("systemd-analyze")
    unit = tmp_path / "broken.service"
    unit.write_text("[Service]\nType=notify\nWatchdogSecs=30\nExecStart=/bin/true\n")
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert "Unknown key 'WatchdogSecs'" in result.stderr


def test_units_stay_hardened(tmp_path: Path) -> None:
    """``systemd-analyze security`` exposure at most 2.5 of 10 (today: agent 1.9, server
    1.8): dropping a sandbox directive fails here, not on a kiosk."""
    analyze = _tool("systemd-analyze")
    units = []
    for unit in (AGENT, SERVER):
        shutil.copy(UNITS / unit, tmp_path / unit)
        units.append(str(tmp_path / unit))
    result = subprocess.run(
        [analyze, "security", "--offline=true", "--threshold=25", "--no-pager", *units],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr


def test_the_agent_unit_holds_the_plan() -> None:
    unit = _directives(AGENT)
    for key, value in {
        "Type": "notify",
        "NotifyAccess": "main",
        "WatchdogSec": "30",
        "Restart": "always",
        "RestartSec": "2",
        "User": "siheyi",
        "ProtectSystem": "strict",
        "ReadWritePaths": "/var/lib/siheyi /opt/siheyi",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "ProtectHome": "yes",
        "DevicePolicy": "closed",
        # lgpio makes its notification pipes in the working directory: never read-only /
        "WorkingDirectory": "/var/lib/siheyi",
        "ExecStart": "/opt/siheyi/current/bin/kiosk device run --config /etc/siheyi/kiosk.toml",
        "ExecStartPre": "/usr/bin/python3 /opt/siheyi/bin/siheyi-boot-guard "
        "--config /etc/siheyi/kiosk.toml",
    }.items():
        assert unit[key] == [value], key
    assert set(unit["SupplementaryGroups"][0].split()) == {"dialout", "gpio", "audio", "video"}
    allowed = {rule.split()[0] for rule in unit["DeviceAllow"]}
    for device in ("/dev/siheyi-reader", "char-gpiochip", "char-alsa", "char-video4linux"):
        assert device in allowed


def test_the_server_unit_has_no_devices() -> None:
    unit = _directives(SERVER)
    assert unit["Type"] == ["notify"] and unit["WatchdogSec"] == ["30"]
    assert unit["NotifyAccess"] == ["main"] and unit["Restart"] == ["always"]
    assert unit["ExecStart"] == [
        "/opt/siheyi/current/bin/kiosk server run --config /etc/siheyi/server.toml"
    ]
    assert unit["PrivateDevices"] == ["yes"] and unit["DevicePolicy"] == ["closed"]
    assert "DeviceAllow" not in unit and "SupplementaryGroups" not in unit
    assert unit["ReadWritePaths"] == ["/var/lib/siheyi"]
    assert unit["WorkingDirectory"] == ["/var/lib/siheyi"]


def test_install_script_passes_shellcheck() -> None:
    shellcheck = _tool("shellcheck")
    result = subprocess.run(
        [shellcheck, "--severity=style", str(REPO / "deploy" / "install.sh")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout
