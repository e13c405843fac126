"""Checks of the kiosk's own files: bundle, key file modes, disk space, journal, prompts.

None of them touches hardware or the network, and none writes anything: doctor may run next
to a running agent and must leave its state exactly as it found it (the journal is opened
read-only; a broken prompt clip is reported, not deleted as the renderer would).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import stat
import time
from pathlib import Path

from device.acting.tuning import VoiceRecipe, starting_voice
from device.acting.voice import VoiceParts, check_wav
from device.config import load_bundle
from device.doctor.context import DoctorContext
from device.doctor.model import CheckResult, fail, ok, warn
from device.errors import ConfigError, VoiceError
from device.link.identity import PENDING_SUFFIX


def check_config(ctx: DoctorContext) -> CheckResult:
    """The configuration was validated when it was loaded; here the bundle it names."""
    path = Path(ctx.config.bundle)
    try:
        ctx.bundle = load_bundle(path)
    except ConfigError as exc:
        ctx.bundle_error = str(exc)
        return fail(
            "config",
            str(exc),
            f"provision this kiosk: `kiosk provision add SERIAL SITE --bundle {path}` on the "
            "admin machine and copy the bundle here (mode 0600), or `kiosk device enrol`",
        )
    url = ctx.server_url
    if not url.startswith(("http://", "https://")):
        return fail("config", f"server URL {url!r} is not http(s)", "set server_url in the config")
    b = ctx.bundle
    return ok("config", f"config valid; bundle {path}: device {b.device_id}, site {b.site}")


def check_key_file(ctx: DoctorContext) -> CheckResult:
    """The bundle holds the kiosk's private key: owner-only, owned by the agent's user."""
    bundle = Path(ctx.config.bundle)
    user = ctx.probes.user()
    files = [bundle, bundle.with_name(bundle.name + PENDING_SUFFIX)]
    problems: list[str] = []
    fixes: list[str] = []
    checked = 0
    for path in files:
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        checked += 1
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            problems.append(f"{path} is mode {mode:04o} (others may read the private key)")
            fixes.append(f"chmod 600 {path}")
        if st.st_uid != user.uid:
            problems.append(f"{path} is owned by uid {st.st_uid}, not {user.name}")
            fixes.append(f"chown {user.name} {path}")
    if not checked:
        return fail("key_file", f"{bundle} does not exist", "provision the kiosk (see config)")
    if problems:
        return fail("key_file", "; ".join(problems), "; ".join(fixes))
    return ok("key_file", f"{bundle}: mode 0600 or stricter, owned by {user.name}")


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(ctx: DoctorContext) -> CheckResult:
    """Free space where the journal lives: a full SD card stops the audit trail."""
    where = _existing(ctx.state_dir)
    try:
        vfs = ctx.probes.statvfs(str(where))
    except OSError as exc:
        return fail("disk", f"cannot stat {where}: {exc}", f"create {ctx.state_dir}")
    free = vfs.f_bavail * vfs.f_frsize
    total = vfs.f_blocks * vfs.f_frsize
    fraction = free / total if total else 0.0
    t = ctx.thresholds
    text = f"{where}: {free / 2**20:.0f} MiB free ({fraction:.0%})"
    fix = (
        f"free space on the file system of {ctx.state_dir}: `journalctl --vacuum-size=50M`, "
        "`apt-get clean`, remove old releases under /opt/siheyi/releases"
    )
    if free < t.disk_fail_bytes or fraction < t.disk_fail_fraction:
        return fail("disk", text, fix)
    if free < t.disk_warn_bytes or fraction < t.disk_warn_fraction:
        return warn("disk", text, fix)
    return ok("disk", text)


def _journal_counts(path: Path) -> tuple[int, int, float | None]:
    """(pending events, dead letters, age in seconds of the oldest pending event or None)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
        if "events" not in tables:
            return 0, 0, None
        (pending,) = conn.execute("SELECT count(*) FROM events").fetchone()
        dead = 0
        if "dead_letters" in tables:
            (dead,) = conn.execute("SELECT count(*) FROM dead_letters").fetchone()
        row = conn.execute("SELECT body FROM events ORDER BY id LIMIT 1").fetchone()
    return int(pending), int(dead), _age(row[0]) if row else None


def _age(body: str) -> float | None:
    """Seconds since the event's ``wall_time`` (ISO 8601), None when it has none."""
    try:
        when = dt.datetime.fromisoformat(str(json.loads(body)["wall_time"]))
    except (ValueError, KeyError, TypeError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, time.time() - when.timestamp())


def check_journal(ctx: DoctorContext) -> CheckResult:
    """Events waiting for the server, and events it refused (dead letters)."""
    path = ctx.state_dir / "journal.db"
    if not path.exists():
        return ok("journal", f"no journal yet at {path} (a kiosk that never ran)")
    try:
        pending, dead, age = _journal_counts(path)
    except sqlite3.Error as exc:
        return fail(
            "journal",
            f"{path} cannot be read: {exc}",
            "stop the agent and inspect the journal; `kiosk device wipe` only for a retired kiosk",
        )
    t = ctx.thresholds
    age_text = f", oldest {age / 60:.0f} min old" if age is not None else ""
    text = f"{pending} events not uploaded{age_text}, {dead} dead letters"
    fix = (
        "pending events upload once the server is reachable (see the server and session "
        "checks); dead letters are events the server refused: look at the server log "
        "and the kiosk's heartbeat (journal.dead_letters)"
    )

    def beyond(events: int, age_s: float, dead_letters: int) -> bool:
        too_old = age is not None and age >= age_s
        return pending >= events or too_old or dead >= dead_letters

    if beyond(t.backlog_fail_events, t.backlog_fail_age_s, t.dead_letters_fail):
        return fail("journal", text, fix)
    if beyond(t.backlog_warn_events, t.backlog_warn_age_s, t.dead_letters_warn):
        return warn("journal", text, fix)
    return ok("journal", text)


def voice_parts(ctx: DoctorContext) -> tuple[VoiceRecipe, VoiceParts]:
    """The voice the agent starts with (device.runtime.voice_for): kiosk.toml, with the
    remote voice settings and the voice pack an admin last sent (read-only here)."""
    recipe, parts, _ = starting_voice(ctx.config, ctx.state_dir)
    return recipe, parts


def prompt_texts(ctx: DoctorContext) -> list[str]:
    """Every text the agent renders at start-up, in a fixed order."""
    return list(dict.fromkeys(voice_parts(ctx)[1].prompts.values()))


def check_prompts(ctx: DoctorContext) -> CheckResult:
    """Every prompt has a valid clip in the cache (so no tap waits for synthesis), and every
    recorded clip, the kiosk's own or a voice pack's, is one the agent will play."""
    recipe, parts = voice_parts(ctx)
    voice, renderer = ctx.config.voice, recipe.renderer()
    usable, problems = parts.library.check() if parts.library is not None else ({}, [])
    recorded = {key for key in usable if "." not in key}  # the first language's clips
    bad = [f"{p.path}: {p.reason}" for p in problems]
    covered = {parts.prompts[key] for key in recorded if key in parts.prompts}
    texts = [t for t in dict.fromkeys(parts.prompts.values()) if t not in covered]
    missing: list[str] = []
    for text in texts:
        path = renderer.path_for(text)
        try:
            check_wav(path)
        except (VoiceError, OSError):
            missing.append(text)
    if missing:
        shown = ", ".join(repr(t) for t in missing[:3]) + (" …" if len(missing) > 3 else "")
        return fail(
            "prompts",
            f"{len(missing)} of {len(texts)} prompts not rendered in {ctx.prompt_dir}: {shown}",
            "start the agent once with espeak-ng installed (`apt install espeak-ng`; voice "
            f"{voice.voice!r}): it renders missing prompts at start-up",
        )
    rendered = f"all {len(texts)} prompts rendered in {ctx.prompt_dir}"
    if parts.pack is not None:
        rendered += f" (voice pack {parts.pack})"
    if bad:
        return warn(
            "prompts",
            f"{rendered}; recorded clips not used (synthesis plays instead): " + "; ".join(bad),
            "fix or replace the file (WAV, FLAC or OGG, at most 2.5 s, not silent): in "
            "[voice.clips], or in a new voice pack (docs/voice-packs.md)",
        )
    if recorded:
        rendered += f", {len(recorded)} recorded"
    return ok("prompts", rendered)
