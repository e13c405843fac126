"""What ``kiosk provision`` needs from a fleet, whichever way it reaches it.

Two implementations: :class:`provisioning.remote.RemoteFleet` speaks the admin API from an
administrator's laptop (``--server-url``); the server's own ``LocalFleet`` works on its
database file (``--database`` / ``--config``) and is wired in by the ``kiosk`` command line,
because ``provisioning`` may not import the server. Both answer in the wire models of
:mod:`core.wire_admin`, so every verb prints the same in both modes, and both raise
:mod:`provisioning.errors` (the local one through :class:`GuardedFleet`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

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
from provisioning.errors import ProvisioningError


class FleetBackend(Protocol):
    """The fleet operations of ``kiosk provision``.

    ``before_commit`` hooks are called with the answer before the change is final where the
    backend can do that (a local transaction), else right after it: bundle files are written
    there, so that locally a failed write registers nothing.
    """

    #: Whether ``before_commit`` runs inside the change (a failure undoes it).
    atomic: bool

    def add_sites(self, names: Sequence[str]) -> SitesAdded: ...

    def list_sites(self) -> SiteList: ...

    def register(
        self,
        serial: str,
        request: RegisterRequest,
        before_commit: Callable[[Registered], None] | None = None,
    ) -> Registered: ...

    def upsert(
        self,
        request: BulkRequest,
        before_commit: Callable[[BulkAnswer], None] | None = None,
    ) -> BulkAnswer: ...

    def devices(
        self,
        *,
        site: str | None = None,
        gate: str | None = None,
        status: str | None = None,
        serial_prefix: str | None = None,
    ) -> DeviceList: ...

    def act(self, serial_or_id: str, action: DeviceAction) -> DeviceInfo: ...

    def enrol_code(self, serial: str, ttl_s: float | None = None) -> EnrolCode: ...

    def set_config(self, request: ConfigSetRequest) -> ConfigVersion: ...

    def config(self) -> ConfigLayers: ...


class LocalFleetBackend(FleetBackend, Protocol):
    """A fleet on its database: it can also be set up (keys, settings, the first admin)."""

    #: Where the fleet is (the database file), for messages.
    database: str

    def init_fleet(
        self, *, server_url: str | None, tls_ca: str | None, admin: tuple[str, str] | None
    ) -> str: ...


#: Opens the local fleet for ``--config FILE`` / ``--database PATH`` (either may be None).
LocalOpener = Callable[[str | None, str | None], LocalFleetBackend]
#: Maps a backend's own exception to a provisioning error, or None to let it propagate.
Translate = Callable[[Exception], ProvisioningError | None]


class GuardedFleet:
    """A local fleet whose own exceptions surface as :mod:`provisioning.errors`."""

    def __init__(self, inner: LocalFleetBackend, translate: Translate) -> None:
        self._inner = inner
        self._translate = translate
        self.atomic = inner.atomic
        self.database = inner.database

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except ProvisioningError:
            raise
        except Exception as exc:
            mapped = self._translate(exc)
            if mapped is None:
                raise
            raise mapped from exc

    def init_fleet(
        self, *, server_url: str | None, tls_ca: str | None, admin: tuple[str, str] | None
    ) -> str:
        with self._guard():
            return self._inner.init_fleet(server_url=server_url, tls_ca=tls_ca, admin=admin)

    def add_sites(self, names: Sequence[str]) -> SitesAdded:
        with self._guard():
            return self._inner.add_sites(names)

    def list_sites(self) -> SiteList:
        with self._guard():
            return self._inner.list_sites()

    def register(
        self,
        serial: str,
        request: RegisterRequest,
        before_commit: Callable[[Registered], None] | None = None,
    ) -> Registered:
        with self._guard():
            return self._inner.register(serial, request, before_commit)

    def upsert(
        self,
        request: BulkRequest,
        before_commit: Callable[[BulkAnswer], None] | None = None,
    ) -> BulkAnswer:
        with self._guard():
            return self._inner.upsert(request, before_commit)

    def devices(
        self,
        *,
        site: str | None = None,
        gate: str | None = None,
        status: str | None = None,
        serial_prefix: str | None = None,
    ) -> DeviceList:
        with self._guard():
            return self._inner.devices(
                site=site, gate=gate, status=status, serial_prefix=serial_prefix
            )

    def act(self, serial_or_id: str, action: DeviceAction) -> DeviceInfo:
        with self._guard():
            return self._inner.act(serial_or_id, action)

    def enrol_code(self, serial: str, ttl_s: float | None = None) -> EnrolCode:
        with self._guard():
            return self._inner.enrol_code(serial, ttl_s)

    def set_config(self, request: ConfigSetRequest) -> ConfigVersion:
        with self._guard():
            return self._inner.set_config(request)

    def config(self) -> ConfigLayers:
        with self._guard():
            return self._inner.config()
