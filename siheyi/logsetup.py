"""Logging for every ``kiosk`` verb: text or JSON lines, to stderr or a rotated file, masked.

Under systemd the agent and the server log to stderr, which journald keeps (and rotates)
with the unit's name: ``journalctl -u siheyi-agent``. ``--log-format json`` (or
``SIHEYI_LOG_FORMAT=json`` in a unit) writes one JSON object per line instead, for a log
shipper that wants fields rather than text. ``--log-file`` (``SIHEYI_LOG_FILE``) writes to a
file instead of stderr, for a machine without journald.

The file is rotated by :class:`logging.handlers.RotatingFileHandler` when ``max_bytes`` is
set (``--log-max-bytes``, ``SIHEYI_LOG_MAX_BYTES``): the kiosk bounds its own disk use on an
SD card without a logrotate configuration that an install could miss, and one process
writes it. With ``max_bytes=0`` the file is a :class:`logging.handlers.WatchedFileHandler`
instead, for an outside logrotate. That is what ``kiosk server run --workers N`` needs, whose
forked processes would otherwise each rotate the one file under the others:
:func:`share_with_workers` switches to it by itself before the workers start.

Every handler carries :class:`device.privacy.IdNumberRedactor` (DESIGN.md "Privacy"): a
full ID number never reaches a log line — in the message, its arguments, a traceback, or a
JSON field.
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import os
from datetime import UTC, datetime
from typing import Any

from core.idnumbers import contains_clear_id, redact
from device.privacy import IdNumberRedactor

__all__ = [
    "DEFAULT_BACKUPS",
    "DEFAULT_MAX_BYTES",
    "FORMATS",
    "JsonFormatter",
    "add_arguments",
    "configure_from_args",
    "configure_logging",
    "default_backups",
    "default_file",
    "default_format",
    "default_max_bytes",
    "share_with_workers",
]

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: 10 MB × (1 + 5 backups): at most 60 MB of logs on the SD card.
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUPS = 5

#: Marks the handlers configure_logging installed (it replaces those, and only those).
_OURS = "siheyi_logsetup"
#: LogRecord attributes that are not ``extra=`` fields.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


def default_format() -> str:
    """``$SIHEYI_LOG_FORMAT`` when it names a format, else text."""
    value = os.environ.get("SIHEYI_LOG_FORMAT", "").strip().lower()
    return value if value in FORMATS else "text"


def default_file() -> str | None:
    """``$SIHEYI_LOG_FILE``, or None (stderr)."""
    return os.environ.get("SIHEYI_LOG_FILE", "").strip() or None


def default_max_bytes() -> int:
    """``$SIHEYI_LOG_MAX_BYTES`` when it is a count (0: logrotate's job), else 10 MB."""
    return _env_count("SIHEYI_LOG_MAX_BYTES", DEFAULT_MAX_BYTES)


def default_backups() -> int:
    """``$SIHEYI_LOG_BACKUPS`` when it is a count, else 5."""
    return _env_count("SIHEYI_LOG_BACKUPS", DEFAULT_BACKUPS)


def _env_count(name: str, default: int) -> int:
    """A non-negative integer from the environment; anything else is ignored (as an unknown
    ``SIHEYI_LOG_FORMAT`` is): a typo in a unit's env file must not keep the agent down."""
    try:
        value = int(os.environ.get(name, "").strip())
    except ValueError:
        return default
    return value if value >= 0 else default


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, the
    exception and stack text when there are any, and the record's ``extra=`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry:
                entry[key] = _field(value)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _field(value: Any) -> Any:
    """An ``extra=`` value as JSON will hold it, masked: the redactor sees only the message.
    (An ID number may come as a string, inside a structure, or as an 18-digit integer.)"""
    if value is None or isinstance(value, bool | float):
        return value
    text = json.dumps(value, ensure_ascii=False, default=str)
    if not contains_clear_id(text):
        return value if isinstance(value, str | int) else json.loads(text)
    masked = redact(text)
    try:
        return json.loads(masked)
    except ValueError:  # a bare masked integer is no longer JSON: keep it as text
        return masked


def _formatter(fmt: str) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter()
    if fmt == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ValueError(f"log format {fmt!r}: expected one of {', '.join(FORMATS)}")


def _handler(file: str | None, max_bytes: int, backups: int) -> logging.Handler:
    if file is None:
        return logging.StreamHandler()
    if max_bytes > 0:
        return logging.handlers.RotatingFileHandler(
            file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
    return logging.handlers.WatchedFileHandler(file, encoding="utf-8")


def configure_logging(
    verbose: bool = False,
    fmt: str | None = None,
    file: str | None = None,
    max_bytes: int | None = None,
    backups: int | None = None,
    *,
    force: bool = False,
) -> logging.Handler | None:
    """Give the root logger one masked handler (replacing one this function installed
    before); the handler.

    Like :func:`logging.basicConfig`, leaves logging alone and returns None when something
    else already put handlers on the root logger (a test harness, a program embedding
    ``kiosk``), unless ``force``. ``fmt``, ``file``, ``max_bytes`` and ``backups`` default to
    ``$SIHEYI_LOG_FORMAT``, ``$SIHEYI_LOG_FILE``, ``$SIHEYI_LOG_MAX_BYTES`` and
    ``$SIHEYI_LOG_BACKUPS``; ``max_bytes`` 0 hands rotation to an outside logrotate (see the
    module docstring). Raises ValueError for an unknown format, OSError for a file that
    cannot be opened (its directory is not created).
    """
    root = logging.getLogger()
    if not force and any(not getattr(h, _OURS, False) for h in root.handlers):
        return None
    formatter = _formatter(fmt or default_format())
    max_bytes = default_max_bytes() if max_bytes is None else max_bytes
    backups = default_backups() if backups is None else backups
    handler = _handler(file or default_file(), max_bytes, backups)
    _install(root, handler, formatter, force=force)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    return handler


def _install(
    root: logging.Logger, handler: logging.Handler, formatter: logging.Formatter, *, force: bool
) -> None:
    """``handler``, masked and formatted, in place of ours (of every one, when ``force``)."""
    setattr(handler, _OURS, True)
    handler.addFilter(IdNumberRedactor())
    handler.setFormatter(formatter)
    for old in root.handlers[:]:
        if force or getattr(old, _OURS, False):
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)


def share_with_workers(workers: int) -> logging.Handler | None:
    """Before forking ``workers`` server processes: a log file this module rotates itself is
    reopened as a :class:`~logging.handlers.WatchedFileHandler` (rotation left to logrotate,
    docs/install.md), since each process would otherwise rotate the shared file under the
    others and lines would go to renamed or deleted files. The new handler, or None when
    nothing needed to change (one process, stderr, a file already without rotation)."""
    if workers <= 1:
        return None
    root = logging.getLogger()
    rotating = [
        h
        for h in root.handlers
        if getattr(h, _OURS, False) and isinstance(h, logging.handlers.RotatingFileHandler)
    ]
    if not rotating:
        return None
    old = rotating[0]
    handler = logging.handlers.WatchedFileHandler(old.baseFilename, encoding="utf-8")
    _install(root, handler, old.formatter or _formatter("text"), force=False)
    logging.getLogger(__name__).warning(
        "%d server processes share %s: it is not rotated by them, rotate it with logrotate "
        "(copytruncate not needed) or log to journald",
        workers,
        old.baseFilename,
    )
    return handler


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``kiosk``'s global logging options (before the verb: ``kiosk --log-format json ...``)."""
    group = parser.add_argument_group("logging")
    group.add_argument(
        "--log-format",
        choices=FORMATS,
        help="text, or one JSON object per line (default: $SIHEYI_LOG_FORMAT, else text)",
    )
    group.add_argument(
        "--log-file", metavar="FILE", help="log to FILE, not stderr (default: $SIHEYI_LOG_FILE)"
    )
    group.add_argument(
        "--log-max-bytes",
        type=_count,
        metavar="N",
        help="rotate the log file at N bytes; 0: leave rotation to logrotate "
        "(default: $SIHEYI_LOG_MAX_BYTES, else 10 MB; 0 for server run with workers)",
    )
    group.add_argument(
        "--log-backups",
        type=_count,
        metavar="N",
        help=f"rotated files kept (default: $SIHEYI_LOG_BACKUPS, else {DEFAULT_BACKUPS})",
    )


def configure_from_args(args: argparse.Namespace, *, force: bool = False) -> logging.Handler | None:
    """:func:`configure_logging` from the options of :func:`add_arguments` and ``-v``;
    ``server run --workers N`` (N > 1) gets a file without rotation (:func:`share_with_workers`;
    workers set in server.toml instead need that call once the config is read)."""
    handler = configure_logging(
        verbose=bool(getattr(args, "verbose", False)),
        fmt=args.log_format,
        file=args.log_file,
        max_bytes=args.log_max_bytes,
        backups=args.log_backups,
        force=force,
    )
    workers = getattr(args, "workers", None)
    if handler is not None and isinstance(workers, int):
        return share_with_workers(workers) or handler
    return handler
