"""siheyi.logsetup: JSON lines that parse, rotation, and no full ID number on any path."""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.idnumbers import make_id_number, mask
from siheyi.logsetup import (
    JsonFormatter,
    add_arguments,
    configure_from_args,
    configure_logging,
    default_backups,
    default_file,
    default_format,
    default_max_bytes,
    share_with_workers,
)

ID = make_id_number("110101", "19900307", "123")


@pytest.fixture(autouse=True)
def _restore_root_logging() -> Iterator[None]:
    """The tests configure with ``force=True`` (pytest's own handlers are on the root logger,
    which would make configure_logging stand back): put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def _records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def test_json_lines_parse_with_time_level_logger_message(tmp_path: Path) -> None:
    log_file = tmp_path / "kiosk.log"
    configure_logging(verbose=True, fmt="json", file=str(log_file), force=True)
    log = logging.getLogger("device.agent")
    log.debug("tap %d: %s", 7, "通行")
    log.warning("reader gone", extra={"port": "/dev/siheyi-reader", "tries": 3})
    first, second = _records(log_file)
    assert first["level"] == "DEBUG" and first["logger"] == "device.agent"
    assert first["message"] == "tap 7: 通行"
    assert str(first["time"]).endswith("+00:00")
    assert second["port"] == "/dev/siheyi-reader" and second["tries"] == 3
    assert "exception" not in second


def test_json_carries_the_exception_text(tmp_path: Path) -> None:
    log_file = tmp_path / "kiosk.log"
    configure_logging(fmt="json", file=str(log_file), force=True)
    try:
        raise RuntimeError("journal locked")
    except RuntimeError:
        logging.getLogger("x").exception("upload failed")
    (record,) = _records(log_file)
    assert record["level"] == "ERROR"
    assert "RuntimeError: journal locked" in str(record["exception"])
    assert "Traceback" in str(record["exception"])


def test_info_by_default_debug_when_verbose(tmp_path: Path) -> None:
    log_file = tmp_path / "kiosk.log"
    configure_logging(fmt="text", file=str(log_file), force=True)
    logging.getLogger("x").debug("hidden")
    logging.getLogger("x").info("shown")
    text = log_file.read_text("utf-8")
    assert "hidden" not in text and "INFO x: shown" in text


def test_the_file_rotates(tmp_path: Path) -> None:
    log_file = tmp_path / "kiosk.log"
    configure_logging(fmt="json", file=str(log_file), max_bytes=2000, backups=2, force=True)
    for n in range(200):
        logging.getLogger("x").info("line %03d %s", n, "." * 40)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["kiosk.log", "kiosk.log.1", "kiosk.log.2"]
    for name in files:
        assert (tmp_path / name).stat().st_size <= 2000
        _records(tmp_path / name)  # every kept line still parses
    assert "line 199" in log_file.read_text("utf-8")


def test_max_bytes_zero_leaves_rotation_to_logrotate(tmp_path: Path) -> None:
    log_file = tmp_path / "kiosk.log"
    handler = configure_logging(file=str(log_file), max_bytes=0, force=True)
    assert isinstance(handler, logging.handlers.WatchedFileHandler)
    logging.getLogger("x").info("before")
    log_file.rename(tmp_path / "kiosk.log.1")  # what logrotate does
    logging.getLogger("x").info("after")
    assert "after" in log_file.read_text("utf-8")
    assert "after" not in (tmp_path / "kiosk.log.1").read_text("utf-8")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_no_full_id_number_in_any_part_of_a_record(tmp_path: Path, fmt: str) -> None:
    log_file = tmp_path / "kiosk.log"
    configure_logging(fmt=fmt, file=str(log_file), force=True)
    log = logging.getLogger("device.agent")
    log.info(f"read {ID} in the message")
    log.info("read %s as an argument", ID)
    log.info("extra field", extra={"credential": ID, "nested": {"ids": [ID]}, "n": int(ID)})
    try:
        raise ValueError(f"bad card {ID}")
    except ValueError:
        log.exception("lookup failed")
    text = log_file.read_text("utf-8")
    assert ID not in text
    assert ID[:17] not in text
    # message, argument, exception (text shows no extra= fields; JSON shows both)
    assert text.count(mask(ID)) == (3 if fmt == "text" else 6)
    if fmt == "json":
        records = _records(log_file)
        assert records[2]["credential"] == mask(ID)
        assert records[2]["nested"] == {"ids": [mask(ID)]}
        assert records[2]["n"] == mask(ID)
        assert "ValueError: bad card " + mask(ID) in str(records[3]["exception"])


def test_environment_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SIHEYI_LOG_FORMAT", raising=False)
    monkeypatch.delenv("SIHEYI_LOG_FILE", raising=False)
    assert default_format() == "text" and default_file() is None
    log_file = tmp_path / "agent.log"
    monkeypatch.setenv("SIHEYI_LOG_FORMAT", "JSON")
    monkeypatch.setenv("SIHEYI_LOG_FILE", str(log_file))
    handler = configure_logging(force=True)
    assert handler is not None and isinstance(handler.formatter, JsonFormatter)
    logging.getLogger("x").info("from the unit's environment")
    assert _records(log_file)[0]["message"] == "from the unit's environment"


def test_reconfiguring_replaces_its_own_handler_only(tmp_path: Path) -> None:
    root = logging.getLogger()
    first = configure_logging(file=str(tmp_path / "a.log"), force=True)
    second = configure_logging(file=str(tmp_path / "b.log"))  # replaces only its own
    assert root.handlers == [second] and first is not second
    foreign = logging.NullHandler()  # a test harness's, an embedding program's
    root.addHandler(foreign)
    assert configure_logging(file=str(tmp_path / "c.log")) is None  # as basicConfig does
    assert root.handlers == [second, foreign]
    assert not (tmp_path / "c.log").exists()
    forced = configure_logging(file=str(tmp_path / "c.log"), force=True)
    assert root.handlers == [forced]


def test_a_log_file_in_a_missing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        configure_logging(file=str(tmp_path / "no-such-folder" / "kiosk.log"), force=True)
    assert not (tmp_path / "no-such-folder").exists()


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log format 'xml'"):
        configure_logging(fmt="xml", force=True)


def test_command_line_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="kiosk")
    parser.add_argument("-v", "--verbose", action="store_true")
    add_arguments(parser)
    log_file = tmp_path / "kiosk.log"
    args = parser.parse_args(
        ["-v", "--log-format", "json", "--log-file", str(log_file), "--log-max-bytes", "0"]
    )
    handler = configure_from_args(args, force=True)
    assert isinstance(handler, logging.handlers.WatchedFileHandler)
    logging.getLogger("x").debug("verbose")
    assert _records(log_file)[0]["message"] == "verbose"
    with pytest.raises(SystemExit):
        parser.parse_args(["--log-backups", "-1"])
    assert "is negative" in capsys.readouterr().err


def test_rotation_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A unit's env file sets the rotation too (SIHEYI_LOG_MAX_BYTES=0: logrotate's job)."""
    monkeypatch.delenv("SIHEYI_LOG_MAX_BYTES", raising=False)
    monkeypatch.delenv("SIHEYI_LOG_BACKUPS", raising=False)
    assert (default_max_bytes(), default_backups()) == (10 * 1024 * 1024, 5)
    monkeypatch.setenv("SIHEYI_LOG_MAX_BYTES", "2000")
    monkeypatch.setenv("SIHEYI_LOG_BACKUPS", "2")
    handler = configure_logging(file=str(tmp_path / "a.log"), force=True)
    assert isinstance(handler, logging.handlers.RotatingFileHandler)
    assert (handler.maxBytes, handler.backupCount) == (2000, 2)
    monkeypatch.setenv("SIHEYI_LOG_MAX_BYTES", "0")
    handler = configure_logging(file=str(tmp_path / "a.log"), force=True)
    assert isinstance(handler, logging.handlers.WatchedFileHandler)
    for bad in ("-1", "ten"):  # ignored, as an unknown SIHEYI_LOG_FORMAT is
        monkeypatch.setenv("SIHEYI_LOG_MAX_BYTES", bad)
        assert default_max_bytes() == 10 * 1024 * 1024


def test_options_override_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SIHEYI_LOG_MAX_BYTES", "0")
    parser = argparse.ArgumentParser(prog="kiosk")
    add_arguments(parser)
    args = parser.parse_args(["--log-file", str(tmp_path / "a.log"), "--log-max-bytes", "3000"])
    handler = configure_from_args(args, force=True)
    assert isinstance(handler, logging.handlers.RotatingFileHandler) and handler.maxBytes == 3000


def test_workers_share_the_file_without_rotating_it(tmp_path: Path) -> None:
    """Several processes each rotating one file would rename it under the others."""
    log_file = tmp_path / "server.log"
    configure_logging(fmt="json", file=str(log_file), max_bytes=2000, force=True)
    assert share_with_workers(1) is None  # one process: its own rotation stays
    handler = share_with_workers(4)
    assert type(handler) is logging.handlers.WatchedFileHandler
    assert logging.getLogger().handlers == [handler]
    assert share_with_workers(4) is None  # already shared
    logging.getLogger("x").info("card %s", ID)
    records = _records(log_file)
    assert "logrotate" in str(records[0]["message"])
    assert records[-1]["message"] == f"card {mask(ID)}"  # still masked, still JSON


def test_server_run_with_workers_on_the_command_line(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="kiosk")
    add_arguments(parser)
    parser.add_argument("--workers", type=int)
    args = parser.parse_args(["--log-file", str(tmp_path / "s.log"), "--workers", "2"])
    handler = configure_from_args(args, force=True)
    assert type(handler) is logging.handlers.WatchedFileHandler
    args = parser.parse_args(["--log-file", str(tmp_path / "s.log")])  # workers: None
    assert type(configure_from_args(args, force=True)) is logging.handlers.RotatingFileHandler
