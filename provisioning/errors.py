"""Exceptions raised by provisioning: one base, each refining a builtin."""

from __future__ import annotations


class ProvisioningError(Exception):
    """Base class of every error raised deliberately by ``provisioning``."""


class SerialExists(ProvisioningError, ValueError):
    """A device with this serial is already registered (use ``rotate_secret``)."""


class DeviceNotFound(ProvisioningError, LookupError):
    """No device has this serial or device id."""


class DeviceRevoked(ProvisioningError, PermissionError):
    """The device is revoked; its secret cannot be rotated."""


class InvalidField(ProvisioningError, ValueError):
    """A serial, site, gate, location or URL is empty, too long or malformed."""


class BundleError(ProvisioningError, OSError):
    """The bundle file cannot be written (or already exists for a new registration)."""


class UnknownSite(ProvisioningError, LookupError):
    """The site is not registered (``kiosk provision site add``, or ``--create-sites``)."""


class RowError(ProvisioningError, ValueError):
    """One row of a bulk registration is refused; the message names the row and column."""


class EnrolRefused(ProvisioningError, PermissionError):
    """An enrolment (or a request for an enrolment code) is refused; ``error`` is the API code."""

    def __init__(self, error: str, detail: str, status: int = 403) -> None:
        super().__init__(detail)
        self.error = error
        self.status = status
