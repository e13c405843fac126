"""Exceptions raised by the provisioning package: one base, each refining a builtin.

``exit_status`` is what ``kiosk provision`` exits with: 1 when the request was refused or the
input was bad, 2 when the fleet could not be reached or used at all (configuration, database,
connection, login), so a script can tell "fix the input" from "fix the set-up".
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


class ProvisioningError(Exception):
    """Base class of every error raised deliberately by ``provisioning``."""

    exit_status = 1


class InvalidField(ProvisioningError, ValueError):
    """A serial, site, gate, location, URL, key or value is empty, too long or malformed."""


class CsvFormatError(InvalidField):
    """The CSV file cannot be used at all (unreadable, no header, no serial/site column)."""


class SerialExists(ProvisioningError, ValueError):
    """A device with this serial is already registered (use ``--rekey``)."""


class DeviceNotFound(ProvisioningError, LookupError):
    """No device has this serial or device id."""


class UnknownSite(ProvisioningError, LookupError):
    """The site is not registered (``kiosk provision site add``, or ``--create-sites``)."""


class Refused(ProvisioningError, PermissionError):
    """The fleet refused the change (e.g. releasing a revoked device)."""


class DeviceRevoked(Refused):
    """The device is revoked, which is final."""


class BundleError(ProvisioningError, OSError):
    """A bundle file cannot be written (or already exists for a new registration)."""


class StoreError(ProvisioningError, RuntimeError):
    """The local configuration or database cannot be used; the message names the file."""

    exit_status = 2


class Unavailable(ProvisioningError, ConnectionError):
    """The server cannot be reached, refused the TLS handshake, or failed (5xx, overload)."""

    exit_status = 2


class LoginFailed(ProvisioningError, PermissionError):
    """No admin login: wrong user name or password, or no way to ask for the password."""

    exit_status = 2


class NoPassword(ProvisioningError, ValueError):
    """An admin password is needed and there is neither a file, the variable nor a terminal."""


Verb = Callable[[argparse.Namespace], int]


def guarded(verb: Verb, words: Callable[[str], str] = str) -> Verb:
    """``verb`` as a command-line verb: a :class:`ProvisioningError` becomes its message on
    stderr (through ``words``, which may turn API wording into the CLI's) and its exit status."""

    def run(args: argparse.Namespace) -> int:
        try:
            return verb(args)
        except ProvisioningError as exc:
            print(f"error: {words(str(exc))}", file=sys.stderr)
            return exc.exit_status

    run.__doc__ = verb.__doc__
    return run
