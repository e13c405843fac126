"""Software versions per site on the board, and the rollout each site follows.

A site's line reads ``1.5.0 ×120 · 1.4.2 ×3``, most kiosks first, with the rollout that sets
the site's version (its own layer, else the fleet's: server/releases/layers.py) and its
state: an admin sees at a glance how far a release has got and whether it halted. The
versions are what the kiosks last said they run (``kiosk_updates.running``, written when it
changes), so a large fleet's summary is one indexed join, not 21,390 heartbeats parsed.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

from server.board.kiosks import Sites, site_filter
from server.storage.connection import Connection

Versions = dict[str, list[tuple[str, int]]]


def tally(pairs: Iterable[tuple[str, str | None]]) -> Versions:
    """(site, version) pairs as site → [(version, kiosks)], most kiosks first; ``?`` for a
    kiosk that has not said."""
    counts: dict[str, Counter[str]] = {}
    for site, version in pairs:
        counts.setdefault(site, Counter())[version or "?"] += 1
    return {
        site: sorted(c.items(), key=lambda item: (-item[1], item[0]))
        for site, c in sorted(counts.items())
    }


def text(versions: list[tuple[str, int]]) -> str:
    """``1.5.0 ×120 · 1.4.2 ×3``."""
    return " · ".join(f"{version} ×{n}" for version, n in versions)


def of_kiosks(kiosks: list[dict[str, Any]]) -> Versions:
    """Versions per site of the board's kiosk list (their last heartbeats)."""
    return tally((k["site"], k["health"].get("version")) for k in kiosks)


def site_versions(conn: Connection, sites: Sites) -> Versions:
    """Versions per site of every (not revoked) kiosk of ``sites``."""
    where, params = site_filter(sites, "d.site")
    rows = conn.execute(
        "SELECT d.site, u.running FROM devices d LEFT JOIN kiosk_updates u"
        " ON u.device_id = d.device_id WHERE d.status <> 'revoked'" + where,
        params,
    ).fetchall()
    return tally((str(site), running) for site, running in rows)


def site_rollouts(conn: Connection, sites: Iterable[str]) -> dict[str, dict[str, Any]]:
    """site → the rollout its layer (else the fleet's) holds: id, version, state, wave."""
    rows = conn.execute(
        "SELECT l.scope, l.target, r.id, r.version, r.state, r.wave, r.waves"
        " FROM release_layers l JOIN rollouts r ON r.id = l.rollout_id"
        " WHERE l.scope IN ('fleet', 'site')"
    ).fetchall()
    layers = {
        (str(scope), str(target)): {
            "id": int(rid),
            "version": str(version),
            "state": str(state),
            "wave": int(wave) + 1,
            "waves": len(_waves(waves)),
        }
        for scope, target, rid, version, state, wave, waves in rows
    }
    out = {}
    for site in sites:
        found = layers.get(("site", site)) or layers.get(("fleet", ""))
        if found is not None:
            out[site] = found
    return out


def _waves(text: str) -> list[Any]:
    value = json.loads(text)
    return value if isinstance(value, list) else []
