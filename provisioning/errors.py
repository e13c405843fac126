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
