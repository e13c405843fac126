"""The refusals of the release and rollout API, each with its HTTP status and error code."""

from __future__ import annotations

from server.http.refusals import Refusal


class ReleaseProblem(Refusal):
    """A refused release or rollout request; the handlers answer ``status`` with ``code``."""

    status = 400
    code = "bad_request"


class NotFound(ReleaseProblem, LookupError):
    """No such release, rollout, site or device."""

    status = 404
    code = "not_found"


class Conflict(ReleaseProblem):
    """The request contradicts what is stored (another wheel under this version, a rollout
    that cannot change state)."""

    status = 409
    code = "conflict"
