"""``kiosk doctor``: the table, the JSON document and the exit statuses."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
from pathlib import Path

from device.doctor import CHECKS
from device.doctor.cli import register
from tests.doctor.conftest import Kiosk


def _parser() -> argparse.ArgumentParser:
    """The verb as siheyi/cli.py mounts it (``-v`` keeps the test's logging untouched)."""
    parser = argparse.ArgumentParser(prog="kiosk")
    parser.add_argument("-v", "--verbose", action="store_true")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


async def _doctor(*argv: str) -> tuple[int, str]:
    args = _parser().parse_args(["-v", "doctor", *argv])
    out = io.StringIO()
    code = await asyncio.to_thread(args.func, args, out)
    return int(code), out.getvalue()


def _toml(kiosk: Kiosk, **reader: str) -> Path:
    c = kiosk.config
    lines = [
        f'bundle = "{c.bundle}"',
        f'state_dir = "{c.state_dir}"',
        "[reader]",
        *(f'{k} = "{v}"' for k, v in {"url": c.reader.url, **reader}.items()),
        "[voice]",
        f'player = "{c.voice.player}"',
        f'cache_dir = "{c.voice.cache_dir}"',
        "[gpio]",
        'pin_factory = "mock"',
        "[camera]",
        "enabled = true",
        f'source = "{c.camera.source}"',
    ]
    path = kiosk.tmp_path / "kiosk.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_json_of_a_healthy_kiosk_exits_0(kiosk: Kiosk) -> None:
    code, out = await _doctor("--config", str(_toml(kiosk)), "--json")
    document = json.loads(out)
    assert code == 0 and document["ok"] is True
    assert [c["name"] for c in document["checks"]] == list(CHECKS)
    assert {c["status"] for c in document["checks"]} <= {"ok", "warn"}
    assert set(document["checks"][0]) == {"name", "status", "detail", "fix"}


async def test_a_failing_check_exits_1_and_the_table_shows_the_fix(kiosk: Kiosk) -> None:
    missing = kiosk.tmp_path / "ttyUSB7"
    code, out = await _doctor("--config", str(_toml(kiosk, url=str(missing))))
    assert code == 1
    lines = out.splitlines()
    failed = next(i for i, line in enumerate(lines) if "serial_port" in line)
    assert lines[failed].startswith("FAIL  serial_port") and str(missing) in lines[failed]
    assert lines[failed + 1].strip().startswith("fix: plug in the reader")
    assert lines[-1].startswith("kiosk NOT healthy:") and lines[-1].endswith(", 1 fail")
    assert len([line for line in lines if line.startswith(("ok  ", "WARN", "FAIL"))]) == len(CHECKS)


async def test_an_unreadable_config_exits_2(tmp_path: Path) -> None:
    code, out = await _doctor("--config", str(tmp_path / "nope.toml"), "--json")
    document = json.loads(out)
    assert code == 2 and document["ok"] is False
    assert (
        document["checks"][0]["name"] == "config"
        and "cannot read" in document["checks"][0]["detail"]
    )


async def test_an_invalid_config_exits_1_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "kiosk.toml"
    path.write_text("[reader]\nbaudrate = 12\n")
    code, out = await _doctor("--config", str(path))
    assert code == 1
    assert out.startswith("FAIL  config") and "reader.baudrate" in out


async def test_an_unknown_agent_user_exits_2(kiosk: Kiosk) -> None:
    code, out = await _doctor("--config", str(_toml(kiosk)), "--user", "no-such-user-h2")
    assert code == 2 and "no such user" in out


async def test_the_agent_user_is_the_one_checked(kiosk: Kiosk) -> None:
    import pwd

    other = next(p for p in pwd.getpwall() if p.pw_uid not in (0, os.geteuid()))
    code, out = await _doctor("--config", str(_toml(kiosk)), "--user", other.pw_name, "--json")
    key_file = next(c for c in json.loads(out)["checks"] if c["name"] == "key_file")
    assert code == 1 and key_file["fix"] == f"chown {other.pw_name} {kiosk.config.bundle}"


async def test_quiet_audio_option_plays_silence(kiosk: Kiosk) -> None:
    code, out = await _doctor("--config", str(_toml(kiosk)), "--json", "--quiet-audio")
    audio = next(c for c in json.loads(out)["checks"] if c["name"] == "audio")
    assert code == 0 and audio["detail"].endswith("played 0.2 s of silence (--quiet-audio)")


async def test_the_boot_guard_judges_the_real_doctor(kiosk: Kiosk) -> None:
    """The guard's command line (``--quiet-audio``) and JSON reading against the real
    ``kiosk doctor``: a reader that is not plugged in fails on the new release and on the
    previous one alike, so it is the place's fault; with nothing to compare, the release's."""
    import sys

    from device.update.bootguard import judge_doctor, run_doctor_once

    exe = Path(sys.executable).with_name("kiosk")
    toml = _toml(kiosk, url=str(kiosk.tmp_path / "ttyUSB9"))
    result = await asyncio.to_thread(run_doctor_once, exe, toml, 60.0)
    assert result.checks is not None and list(result.checks) == list(CHECKS)
    assert (result.exit_status, result.checks["serial_port"]) == (1, "fail")
    assert result.checks["audio"] == "ok"
    assert await asyncio.to_thread(judge_doctor, exe, exe, toml, 60.0) == ""
    alone = await asyncio.to_thread(judge_doctor, exe, None, toml, 60.0)
    assert alone.startswith("kiosk doctor failed (exit 1): ") and "serial_port" in alone
