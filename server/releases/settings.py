"""``[releases]`` of server.toml (docs/releases.md).

``release_key`` pins the fleet's public release key (the hex ``kiosk release keygen``
prints, the same the kiosks pin as ``[update] release_key``): uploads whose signature it does
not check are refused. Empty: the server stores any wheel whose bytes match its SHA-256, and
the kiosks' own check is the only one (they never install an unsigned wheel either way).
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct

_Key = Annotated[
    str,
    Meta(
        pattern="^(|[0-9a-f]{64})$",
        description="the fleet's public release key, hex (empty: uploads are not checked"
        " against it; kiosks always check)",
    ),
]


class ReleaseSettings(Struct, frozen=True, forbid_unknown_fields=True):
    """``[releases]``: what the server checks of a release it is given."""

    release_key: _Key = ""
