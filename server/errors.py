"""Exceptions raised by the server package: one base, each refining a builtin."""

from __future__ import annotations


class ServerError(Exception):
    """Base class of every error raised deliberately by ``server``."""


class ConfigError(ServerError, ValueError):
    """The configuration file is unreadable or invalid; the message names file and key."""


class BadRequest(ServerError, ValueError):
    """A request body does not follow docs/api.md; becomes ``400 bad_request``."""


class SchemaError(ServerError, RuntimeError):
    """The database schema is newer than this code or a migration failed."""


class ImportFormatError(ServerError, ValueError):
    """A CSV import was asked for an unknown kind or an unreadable file."""


class UpstreamError(ServerError, RuntimeError):
    """An HTTP upstream answered badly (status, JSON, a mapped field); names the host only."""
