"""``[metrics]``: who may read ``GET /metrics`` without a token.

The Struct is the schema of the configuration file's ``[metrics]`` table (server/config.py
nests :class:`MetricsSettings` in its ``ServerFile``); like server/alerts/settings.py this
module imports nothing of the server, so config.py may import it.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from msgspec import Meta, Struct

_Network = Annotated[str, Meta(min_length=1, max_length=64)]
#: Long enough that guessing is hopeless; the token is compared in constant time. Checked
#: in ``__post_init__`` rather than by a pattern, so that an error never echoes the secret.
_TOKEN = re.compile(r"[A-Za-z0-9_.~+/=-]{16,256}")
_Token = Annotated[
    str,
    Meta(
        max_length=256,
        description="bearer token a scraper outside those networks may send: 16-256 of "
        'A-Z a-z 0-9 _ . ~ + / = - ("": none)',
    ),
]


class MetricsSettings(Struct, frozen=True, forbid_unknown_fields=True):
    """``[metrics]``: ``/metrics`` answers loopback and ``networks`` without a token; anyone
    else needs ``Authorization: Bearer`` with ``token`` or an admin's or auditor's token
    (docs/metrics.md)."""

    networks: Annotated[
        list[_Network],
        Meta(
            description="addresses or networks (CIDR) of scrapers let in without a token "
            "(loopback always is)"
        ),
    ] = []
    token: _Token = ""

    def __post_init__(self) -> None:
        for entry in self.networks:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                raise ValueError(f"networks: {entry!r}: {exc}") from exc
        if self.token and _TOKEN.fullmatch(self.token) is None:
            raise ValueError("token: must be 16-256 of A-Z a-z 0-9 _ . ~ + / = -")

    def __repr__(self) -> str:
        """Without the token: a logged configuration never shows it."""
        token = "'***'" if self.token else "''"
        return f"MetricsSettings(networks={self.networks!r}, token={token})"
