"""Who is calling, and what that person may see: the one place roles and site scope are
decided, so that every page and API route asks the same question the same way.

* ``admin``: everything, every site.
* ``guard``: the sites assigned to the account, nothing else (another site's kiosk, alert,
  lookup or audit row is a ``403``, not an empty answer, so a scoping bug is loud).
* ``auditor``: reads the audit trail of every site; changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from server.http.middleware import json_error

Role = Literal["admin", "guard", "auditor"]
ROLES: tuple[Role, ...] = ("admin", "guard", "auditor")
Via = Literal["bearer", "cookie"]


@dataclass(frozen=True)
class Principal:
    """An authenticated person. ``via`` says how the request proved it: a bearer token
    (scripts, the CLI) or the board's session cookie (which also needs a CSRF token on every
    request that changes something)."""

    username: str
    role: Role
    sites: frozenset[str]
    via: Via = "bearer"

    @property
    def all_sites(self) -> bool:
        """Admins and auditors see every site; a guard only the assigned ones."""
        return self.role != "guard"

    def sees_site(self, site: str) -> bool:
        return self.all_sites or site in self.sites

    def visible(self, sites: Iterable[str]) -> list[str]:
        """The subset of ``sites`` this person may see, in the given order."""
        return [s for s in sites if self.sees_site(s)]


#: Set by the auth middleware on every request a person made (server/http/auth.py).
USER = web.RequestKey("user", Principal)


def current_user(request: web.Request) -> Principal:
    """The caller, or a ``401`` (a route reached without the middleware's authentication)."""
    if USER not in request:
        raise json_error(
            web.HTTPUnauthorized, "unauthenticated", "log in first", {"WWW-Authenticate": "Bearer"}
        )
    return request[USER]


def require_role(request: web.Request, *roles: Role) -> Principal:
    """The caller if their role is one of ``roles``, else a ``403``."""
    user = current_user(request)
    if user.role not in roles:
        raise json_error(
            web.HTTPForbidden, "forbidden", f"this needs the role {' or '.join(roles)}"
        )
    return user


def require_site(user: Principal, site: str) -> None:
    """A ``403`` unless ``user`` may see ``site``."""
    if not user.sees_site(site):
        raise json_error(web.HTTPForbidden, "forbidden_site", "not one of your sites")
