"""The fleet registry on a database file: the local backend of ``kiosk provision``.

``provisioning`` defines what it needs from a fleet (``provisioning.backend.FleetBackend``)
and may not import the server; this class provides it on the server's own database, with the
same SQL as the admin API (:mod:`server.fleet.registry`) and the same answers
(:mod:`core.wire_admin`). ``siheyi.cli`` wires it in for ``--database`` / ``--config`` and maps
the server's errors onto provisioning's. Each call is one transaction; the ``before_commit``
hooks let the caller write bundle files inside it, so a failed write registers nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from core.wire_admin import (
    BulkAnswer,
    BulkRequest,
    ConfigLayers,
    ConfigSetRequest,
    ConfigVersion,
    DeviceAction,
    DeviceInfo,
    DeviceList,
    EnrolCode,
    Registered,
    RegisterRequest,
    SiteList,
    SitesAdded,
)
from server.accounts.passwords import hash_password
from server.errors import InvalidField
from server.fleet import registry as fleet
from server.fleet.admin import create_admin
from server.offline.keys import signing_key
from server.storage.db import connect, transaction


class LocalFleet:
    """``kiosk provision …`` straight on the server's database file."""

    #: ``before_commit`` hooks run inside the transaction.
    atomic = True

    def __init__(self, database: str | Path) -> None:
        self.database = str(database)

    def init_fleet(
        self, *, server_url: str | None, tls_ca: str | None, admin: tuple[str, str] | None
    ) -> str:
        """Fleet keys and settings, and an administrator; the fleet's server URL or ``""``."""
        password_hash = None
        if admin is not None:
            try:
                password_hash = hash_password(admin[1])
            except ValueError as exc:
                raise InvalidField(str(exc)) from exc
        with connect(self.database) as conn, transaction(conn):
            signing_key(conn)  # site pseudonym keys are created with each site's first bundle
            if server_url:
                fleet.set_setting(conn, "server_url", server_url)
            if tls_ca:
                fleet.set_setting(conn, "tls_ca", tls_ca)
            if admin is not None and password_hash is not None:
                try:
                    create_admin(conn, admin[0], password_hash, fleet.now_iso())
                except ValueError as exc:
                    raise InvalidField(str(exc)) from exc
            return fleet.get_setting(conn, "server_url")

    def add_sites(self, names: Sequence[str]) -> SitesAdded:
        """Register sites (idempotent)."""
        with connect(self.database) as conn, transaction(conn):
            return SitesAdded(fleet.add_sites(conn, names))

    def list_sites(self) -> SiteList:
        """Every registered site."""
        with connect(self.database) as conn:
            return SiteList(fleet.list_sites(conn))

    def register(
        self,
        serial: str,
        request: RegisterRequest,
        before_commit: Callable[[Registered], None] | None = None,
    ) -> Registered:
        """One kiosk with its public key; ``before_commit`` runs inside the transaction."""
        row = fleet.device_row(
            {"serial": serial, "site": request.site, "gate": request.gate}
            | {"location": request.location, "public_key": request.public_key}
        )
        with connect(self.database) as conn, transaction(conn):
            registered = fleet.register_device(conn, row, rekey=request.rekey)
            if before_commit is not None:
                before_commit(registered)
            return registered

    def upsert(
        self,
        request: BulkRequest,
        before_commit: Callable[[BulkAnswer], None] | None = None,
    ) -> BulkAnswer:
        """A bulk upsert in one transaction; ``before_commit`` runs inside it."""
        rows = fleet.validated_rows(request.devices, request.rows)
        with connect(self.database) as conn, transaction(conn):
            report = fleet.upsert_devices(
                conn, rows, create_sites=request.create_sites, dry_run=request.dry_run
            )
            facts = None
            if request.bundle and not request.dry_run:
                facts = fleet.bundle_facts(conn, fleet.created_sites(rows, report))
            answer = fleet.bulk_answer(report, facts)
            if before_commit is not None:
                before_commit(answer)
            return answer

    def devices(
        self,
        *,
        site: str | None = None,
        gate: str | None = None,
        status: str | None = None,
        serial_prefix: str | None = None,
    ) -> DeviceList:
        """Devices ordered by site, gate and serial, filtered by any of the given fields."""
        with connect(self.database) as conn:
            records = fleet.list_records(
                conn, site=site, gate=gate, status=status, serial_prefix=serial_prefix
            )
        return DeviceList([fleet.device_info(r) for r in records])

    def act(self, serial_or_id: str, action: DeviceAction) -> DeviceInfo:
        """Revoke, quarantine, release or rotate one device."""
        with connect(self.database) as conn, transaction(conn):
            return fleet.device_action(conn, serial_or_id, action)

    def enrol_code(self, serial: str, ttl_s: float | None = None) -> EnrolCode:
        """A single-use enrolment code (default lifetime 15 minutes)."""
        with connect(self.database) as conn, transaction(conn):
            code, expires = fleet.issue_enrol_code(conn, serial, 900.0 if ttl_s is None else ttl_s)
        return EnrolCode(serial, code, expires)

    def set_config(self, request: ConfigSetRequest) -> ConfigVersion:
        """Set (or with ``value: null`` remove) one key at one layer."""
        with connect(self.database) as conn, transaction(conn):
            version = fleet.set_config(
                conn, request.scope, request.target, request.key, request.value
            )
        return ConfigVersion(version)

    def config(self) -> ConfigLayers:
        """Every layer's keys."""
        with connect(self.database) as conn:
            return fleet.config_answer(conn)
