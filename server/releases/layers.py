"""The desired version of each kiosk: layers fleet < site < device, each set by a rollout.

Each layer (the fleet, a site, a device) holds the rollout last made for it
(``release_layers``); a newer rollout of the same layer replaces the older one. A kiosk
follows the most specific layer that covers it, whatever that rollout's state: a *running*
rollout offers its version to the kiosks of its open waves, a *done* one to all of them, a
*halted* or *cancelled* one to none (and a less specific layer does not take over: a
cancelled site rollout leaves its kiosks where they are instead of handing them to the
fleet's rollout). To put a site or device back on the fleet's version, roll that version
out to it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from server.releases.waves import in_open_wave
from server.storage.connection import Connection

SCOPE_RANK = {"fleet": 0, "site": 1, "device": 2}


@dataclass(frozen=True)
class Layer:
    """A layer's rollout with what an offer needs of its release."""

    scope: str
    target: str
    rollout_id: int
    version: str
    waves: tuple[float, ...]
    wave: int
    state: str
    filename: str
    sha256: str
    signature: str
    size: int

    def offers(self, device_id: str) -> bool:
        """Whether this layer's rollout offers its version to the kiosk now."""
        if self.state == "done":
            return True
        return self.state == "running" and in_open_wave(
            self.waves, self.wave, self.rollout_id, device_id
        )


Layers = Mapping[tuple[str, str], Layer]


def load_layers(conn: Connection) -> dict[tuple[str, str], Layer]:
    """Every layer with its rollout and release (a handful of rows: one per layer set)."""
    rows = conn.execute(
        "SELECT l.scope, l.target, r.id, r.version, r.waves, r.wave, r.state,"
        " e.filename, e.sha256, e.signature, e.size FROM release_layers l"
        " JOIN rollouts r ON r.id = l.rollout_id JOIN releases e ON e.version = r.version"
    ).fetchall()
    return {
        (str(row[0]), str(row[1])): Layer(
            str(row[0]),
            str(row[1]),
            int(row[2]),
            str(row[3]),
            tuple(float(w) for w in json.loads(row[4])),
            int(row[5]),
            str(row[6]),
            str(row[7]),
            str(row[8]),
            str(row[9]),
            int(row[10]),
        )
        for row in rows
    }


def winning(layers: Layers, device_id: str, site: str) -> Layer | None:
    """The most specific layer covering the kiosk, or None when no rollout covers it."""
    return (
        layers.get(("device", device_id)) or layers.get(("site", site)) or layers.get(("fleet", ""))
    )


def covers(layers: Layers, scope: str, target: str, device_id: str, site: str) -> bool:
    """Whether the layer ``(scope, target)`` is the one the kiosk follows."""
    found = winning(layers, device_id, site)
    return found is not None and (found.scope, found.target) == (scope, target)


def set_layer(conn: Connection, scope: str, target: str, rollout_id: int) -> int | None:
    """Point a layer at a new rollout; the rollout it pointed at before, if any."""
    row = conn.execute(
        "SELECT rollout_id FROM release_layers WHERE scope = ? AND target = ?", (scope, target)
    ).fetchone()
    conn.execute(
        "INSERT INTO release_layers (scope, target, rollout_id) VALUES (?, ?, ?)"
        " ON CONFLICT (scope, target) DO UPDATE SET rollout_id = excluded.rollout_id",
        (scope, target, rollout_id),
    )
    return None if row is None else int(row[0])
