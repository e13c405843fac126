"""The fleets the provisioning tests act on."""

from __future__ import annotations

from pathlib import Path

from provisioning.backend import LocalFleetBackend
from siheyi.cli import local_fleet


def local(database: Path) -> LocalFleetBackend:
    """The fleet on this database file, as ``kiosk provision --database`` opens it."""
    return local_fleet(None, database)
