"""`kiosk device wipe`: remove everything a retired kiosk holds about people and itself.

What a kiosk stores is already minimal (pseudonyms, masked numbers, no photos), but a kiosk
leaving service must not carry even that, nor its private key: the journal, the offline
cache (with any site snapshot), the prompt cache and the device bundle are deleted. Events
not yet uploaded, and events the server refused (dead letters, kept for a person to look
at), would be lost, so the command refuses while the journal holds any, unless `--force`.
Revoke the kiosk on the server as well (`kiosk provision revoke SERIAL`). A kiosk set up
again after a wipe makes a new journal, hence a new journal epoch: it never collides with
the audit its past left on the server.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
from pathlib import Path

from device.config import DeviceConfig
from device.errors import ConfigError

_STATE_FILES = ("journal.db", "cache.db")


def pending_events(journal: Path) -> int:
    """Events in the journal the server does not hold: not yet acknowledged, or refused
    (dead letters); 0 when there is no journal."""
    if not journal.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as conn:
            tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
            return sum(
                int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
                for table in ("events", "dead_letters")
                if table in tables
            )
    except sqlite3.Error:
        return -1  # unreadable: treat as "may hold events"


def wipe(config: DeviceConfig, *, force: bool = False) -> list[Path]:
    """Delete the kiosk's state and bundle; returns what was removed."""
    state = Path(config.state_dir)
    pending = pending_events(state / "journal.db")
    if pending and not force:
        what = "an unreadable journal" if pending < 0 else f"{pending} events not yet uploaded"
        raise ConfigError(f"{state}: {what}; let them upload first or use --force")
    removed: list[Path] = []
    for name in _STATE_FILES:
        for suffix in ("", "-wal", "-shm", "-journal", ".seq", ".reserve"):
            path = state / (name + suffix)
            if path.exists():
                path.unlink()
                removed.append(path)
    prompts = Path(config.voice.cache_dir) if config.voice.cache_dir else state / "prompts"
    if prompts.is_dir():
        shutil.rmtree(prompts)
        removed.append(prompts)
    bundle = Path(config.bundle)
    for path in (bundle, bundle.with_name(bundle.name + ".next-key")):
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed


def _wipe(args: argparse.Namespace) -> int:
    try:
        config = DeviceConfig.load(Path(args.config))
        removed = wipe(config, force=args.force)
    except (ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in removed:
        print(f"removed {path}")
    print("kiosk data wiped; revoke it on the server: kiosk provision revoke SERIAL")
    return 0


def register(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `device wipe` to the `kiosk device` verbs."""
    w = verbs.add_parser("wipe", help="delete a retired kiosk's journal, cache and key")
    w.add_argument("--config", required=True, metavar="FILE", help="device TOML configuration")
    w.add_argument("--force", action="store_true", help="even if events are not uploaded")
    w.set_defaults(func=_wipe)
