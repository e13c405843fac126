"""Exceptions raised by the server package: one base, each refining a builtin."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.verify.service import Verification


class ServerError(Exception):
    """Base class of every error raised deliberately by ``server``."""


class ConfigError(ServerError, ValueError):
    """The configuration file is unreadable or invalid; the message names file and key."""


class BadRequest(ServerError, ValueError):
    """A request body does not follow docs/api.md; becomes ``400 bad_request``."""


class SchemaError(ServerError, RuntimeError):
    """The database schema is newer than this code or a migration failed."""


class StorageUnavailable(ServerError, ConnectionError):
    """The database cannot be reached now; becomes a JSON ``503`` (the kiosk uses its cache)."""


class ImportFormatError(ServerError, ValueError):
    """A CSV import was asked for an unknown kind or an unreadable file."""


class UpstreamError(ServerError, RuntimeError):
    """An HTTP upstream answered badly (status, JSON, a mapped field); names the host only."""


class FleetError(ServerError):
    """Base class of the fleet registry's errors (devices, sites, enrolment)."""


class SerialExists(FleetError, ValueError):
    """A device with this serial is already registered (use ``rotate_secret``)."""


class DeviceNotFound(FleetError, LookupError):
    """No device has this serial or device id."""


class DeviceRevoked(FleetError, PermissionError):
    """The device is revoked; its secret cannot be rotated."""


class InvalidField(FleetError, ValueError):
    """A serial, site, gate, location or URL is empty, too long or malformed."""


class BundleError(FleetError, OSError):
    """The bundle file cannot be written (or already exists for a new registration)."""


class UnknownSite(FleetError, LookupError):
    """The site is not registered (``kiosk provision site add``, or ``--create-sites``)."""


class RowError(FleetError, ValueError):
    """One row of a bulk registration is refused; the message names the row and column."""


class EnrolRefused(FleetError, PermissionError):
    """An enrolment (or a request for an enrolment code) is refused; ``error`` is the API code."""

    def __init__(self, error: str, detail: str, status: int = 403) -> None:
        super().__init__(detail)
        self.error = error
        self.status = status


class PassRefused(ServerError, ValueError):
    """The person's current decision is not ``pass``: no pass is issued."""

    def __init__(self, verification: Verification) -> None:
        decision = verification.decision
        reasons = ",".join(decision.reasons) or "-"
        super().__init__(f"current outcome is {decision.outcome} ({reasons})")
        self.verification = verification
