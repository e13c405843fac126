"""The refusals of the voice pack API, each with its HTTP status and error code."""

from __future__ import annotations

from server.http.refusals import Refusal


class PackProblem(Refusal):
    """A refused upload (not a pack, not what it claims, not signed by the release key)."""

    status = 400
    code = "bad_pack"


class PackConflict(PackProblem):
    """The pack is stored with another signature: a pack names one signed zip for ever."""

    status = 409
    code = "conflict"
