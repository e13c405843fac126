"""The kiosk agent: one asyncio process that turns taps into spoken, gated, audited decisions.

Credential sources run on their own threads and hand credentials to one queue; each tap is
decided, journalled, then spoken and shown on the gate, in that order: audit before actuation.
A kill -9 at any point of a tap then leaves either no actuation at all or an actuation whose
decision is already durable. Speaking while the journal write is in flight was measured and
rejected: it saves one fsync (bench/RESULTS.md: the online p99 holds the 150 ms target with
30 ms and 100 ms fsyncs), and a kill in that window would leave a spoken pass with no record.
Background tasks upload the journal and send heartbeats, and hold the command channel
(device/link/commands.py): a guard's signed remote gate open is journalled as a ``guard``
event before the relay moves, like a tap's decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib.metadata
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from core.commands import SignedCommand
from core.errors import SettingError
from core.settings import REMOTE_SETTINGS, VOICE_KEYS, check_remote_setting, remote_number
from device.acting.packs import RemoteVoice
from device.acting.voice import Voice
from device.config import TEST_PROMPT
from device.counters import KioskCounterSet
from device.deciding.snapshot import SnapshotLoader
from device.deciding.verifier import Decision, Verifier
from device.errors import JournalFull, KioskError, ServerError, VoiceError
from device.link.client import ServerClient, jittered
from device.link.commands import CommandLink
from device.recording.journal import Journal
from device.recording.uploader import Uploader
from device.sources.credentials import Credential
from device.sources.threaded import ReaderEvent
from device.update.selftest import self_test_tap
from device.update.updater import Updater
from device.voicesync import VoiceSync

log = logging.getLogger(__name__)

#: How long a tap waits for the server to take a decision the full disk could not keep.
OVERFLOW_UPLOAD_S = 1.0


def _installed_version() -> str:
    """The version of the installed ``siheyi`` distribution: what the release is (the server
    offers an update when it differs)."""
    try:
        return importlib.metadata.version("siheyi")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a clone
        return "0.1.0"


VERSION = _installed_version()


@dataclass(frozen=True)
class TapResult:
    """One finished tap, as the demo and the tests see it."""

    decision: Decision
    latency_ms: float | None  # credential complete -> playback start; None when nothing played
    spoken: bool
    seq: int | None


TapListener = Callable[[TapResult], Awaitable[None] | None]


def log_tap(result: TapResult) -> None:
    """One INFO line per tap, so ``journalctl -u siheyi-agent`` shows what the gate did
    without the server: masked ID (never the clear number: the decision holds only the
    masked one), outcome, reasons, playback latency, and whether it was decided offline.
    The same values go along as ``extra=`` fields for ``--log-format json``."""
    d = result.decision
    latency = f"{result.latency_ms:.1f} ms" if result.latency_ms is not None else "silent"
    log.info(
        "tap %s: %s %s reasons=%s latency=%s offline=%s",
        d.tap_id,
        d.masked_id or "-",
        d.outcome,
        ",".join(d.reasons) or "-",
        latency,
        "yes" if d.offline else "no",
        extra={
            "tap_id": d.tap_id,
            "masked_id": d.masked_id,
            "outcome": d.outcome,
            "reasons": list(d.reasons),
            "latency_ms": None if result.latency_ms is None else round(result.latency_ms, 1),
            "offline": d.offline,
        },
    )


class CredentialSource(Protocol):
    """What the agent needs of a credential source: `CardReader` (direct), `McuLink` (reader
    behind an MCU), `QrScanner` (camera) or `SsCardReader` (social-security card)."""

    @property
    def connected(self) -> bool: ...

    def start(
        self, on_credential: Callable[[Credential], None], on_event: ReaderEvent | None = None
    ) -> None: ...

    def stop(self) -> None: ...

    def health(self) -> dict[str, Any]: ...


class GateActions(Protocol):
    """What the agent needs of a gate: `Gate` (GPIO on the Pi) or `McuGate` (on the MCU)."""

    def open_pulse(self) -> None: ...

    def show(self, outcome: str) -> None: ...

    def fault(self) -> None: ...

    def safe_state(self) -> None: ...

    def close(self) -> None: ...


class Agent:
    """Wires sources, verifier, voice, gate, journal, uploader and heartbeat together."""

    def __init__(
        self,
        *,
        device_id: str,
        client: ServerClient,
        verifier: Verifier,
        voice: Voice,
        gate: GateActions | None,
        journal: Journal,
        uploader: Uploader,
        reader: CredentialSource | None,
        extra_sources: Sequence[CredentialSource] = (),
        heartbeat_interval_s: float = 30.0,
        boot_id: str | None = None,
        fault_prompt: str = "设备故障，请联系工作人员",
        snapshots: SnapshotLoader | None = None,
        server_key_hex: str = "",
        gate_prompt: str = "",
        test_prompt: str = TEST_PROMPT,
        updater: Updater | None = None,
        voice_sync: VoiceSync | None = None,
    ) -> None:
        self.device_id = device_id
        self.boot_id = boot_id or uuid.uuid4().hex
        self._client = client
        self._verifier = verifier
        self._voice = voice
        self._gate = gate
        self._journal = journal
        self._uploader = uploader
        self._reader = reader  # the ID-card reader (direct or behind the MCU)
        self._sources: list[CredentialSource] = [
            s for s in (reader, *extra_sources) if s is not None
        ]
        self._heartbeat_interval = heartbeat_interval_s
        self._queue: asyncio.Queue[Credential] = asyncio.Queue(maxsize=64)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._listeners: list[TapListener] = []
        self._taps = 0
        self.counters = KioskCounterSet()  # taps, offline, reader errors, prompt latency
        self._started = time.monotonic()
        self._tap_running = False
        self._last_tap_end = self._started
        self.updater = updater
        #: Remote voice settings and packs (None: the voice keeps its local settings).
        self.voice_sync = voice_sync
        self.dropped_credentials = 0
        self._side_tasks: set[asyncio.Task[Any]] = set()
        self._faulty: set[str] = set()  # parts (reader, camera, ...) currently failed
        self._fault_prompt = fault_prompt
        self._snapshots = snapshots
        self.config_version: int | None = None
        self._gate_prompt = gate_prompt
        self._test_prompt = test_prompt
        # the command channel needs the server's key to check commands: none, no channel
        self.commands: CommandLink | None = (
            CommandLink(
                client,
                device_id,
                server_key_hex,
                self.execute_command,
                on_refused=self._command_refused,
            )
            if server_key_hex
            else None
        )

    def add_listener(self, listener: TapListener) -> None:
        self._listeners.append(listener)

    # -- credential intake: called from source threads ------------------------------------
    def submit_threadsafe(self, cred: Credential) -> None:
        """Hand a credential from a source thread to the event loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._enqueue, cred)

    def _enqueue(self, cred: Credential) -> None:
        try:
            self._queue.put_nowait(cred)
        except asyncio.QueueFull:
            self.dropped_credentials += 1
            log.error("credential queue full, dropping a tap (%s)", cred)

    async def submit(self, cred: Credential) -> None:
        await self._queue.put(cred)

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._gate is not None:
            self._gate.safe_state()
        voice_problem = ""
        try:
            await self._voice.start()
        except VoiceError as exc:
            # Some prompts could not be rendered: decide and gate anyway, say what we can.
            voice_problem = str(exc)
            log.error("voice not fully available: %s", exc)
        self._tasks = [
            asyncio.create_task(self._tap_loop(), name="taps"),
            asyncio.create_task(self._uploader.run(), name="uploader"),
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            asyncio.create_task(self._verifier.probe_loop(), name="probe"),
        ]
        if self._snapshots is not None:
            self._tasks.append(asyncio.create_task(self._snapshots.run(), name="snapshot"))
        if self.commands is not None:
            self._tasks.append(asyncio.create_task(self.commands.run(), name="commands"))
        if self.updater is not None:
            self._tasks.append(asyncio.create_task(self.updater.run(), name="updater"))
        for source in self._sources:
            source.start(self.submit_threadsafe, self._reader_event_threadsafe)
        await self._journal_system("agent_started", {"version": VERSION})
        if voice_problem:
            await self.record_fault("voice_unavailable", voice_problem, speak=False)

    async def stop(self) -> None:
        for source in self._sources:
            await asyncio.to_thread(source.stop)
        tasks = [*self._tasks, *self._side_tasks]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        # A last chance to upload; events that do not make it stay in the journal.
        with contextlib.suppress(ServerError, TimeoutError):
            await asyncio.wait_for(self._uploader.drain_once(), timeout=2.0)
        if self._gate is not None:
            self._gate.safe_state()

    async def run_forever(self) -> None:
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    # -- the tap ---------------------------------------------------------------------------
    async def _tap_loop(self) -> None:
        while True:
            cred = await self._queue.get()
            self._tap_running = True
            try:
                await self.handle(cred)
            except Exception:  # a bug in one tap must not stop the kiosk
                log.exception("tap handling failed")
            finally:
                self._tap_running = False
                self._last_tap_end = time.monotonic()

    def idle_for(self) -> float | None:
        """Seconds since the last tap ended; None while a tap runs or waits (the updater
        restarts the agent only when it is idle: never during a tap)."""
        if self._tap_running or not self._queue.empty():
            return None
        return time.monotonic() - self._last_tap_end

    async def drain(self) -> None:
        """Stop taking credentials and let the taps already taken finish (before a restart
        into another release)."""
        for source in self._sources:
            await asyncio.to_thread(source.stop)
        while self.idle_for() is None:
            await asyncio.sleep(0.05)

    async def self_test(self) -> str:
        """A tap through the decision path that moves no relay and says nothing
        (device/update/selftest.py): "" when it works, else why not."""
        tap_id = f"{self.device_id}-{self.boot_id[:8]}-selftest"
        with contextlib.suppress(ServerError, TimeoutError):  # the lookup then has its deadline
            await asyncio.wait_for(self._client.authenticate(), 10.0)
        return await self_test_tap(
            self._verifier, self._client.health, self._journal_system, tap_id
        )

    def _next_tap_id(self) -> str:
        self._taps += 1
        return f"{self.device_id}-{self.boot_id[:8]}-{self._taps}"

    async def handle(self, cred: Credential) -> TapResult:
        """Decide, journal, then speak and switch: the whole tap.

        The journal append returns only once the decision is durable, so nothing the citizen
        sees or hears (and no relay pulse) can outlive a crash without its audit event.
        """
        decision = await self._verifier.decide(cred, self._next_tap_id())
        decided_ms = (time.monotonic() - cred.completed_at) * 1000.0
        try:
            event = await self._journal.append(self._decision_fields(decision, decided_ms))
            await self._make_durable(event)
        except (KioskError, ValueError) as exc:
            # No record, no actuation: the gate stays shut and the citizen hears the fault.
            log.error("decision %s not durable; gate kept shut: %s", decision.tap_id, exc)
            with contextlib.suppress(KioskError, ValueError):  # the journal is what failed
                await self.record_fault("journal_failed", f"{type(exc).__name__}: {exc}")
            return await self._tell(TapResult(decision, None, False, None))
        self._uploader.poke()
        latency_ms, problems = await self._actuate(decision, cred.completed_at, cred.card_type)
        if problems:  # the decision's event is already written: the fault follows it
            what = "voice_fault" if any(p.startswith("voice") for p in problems) else "gate_fault"
            await self.record_fault(what, "; ".join(problems), speak=False, tap_id=decision.tap_id)
        spoken = latency_ms is not None
        return await self._tell(TapResult(decision, latency_ms, spoken, event.get("seq")))

    async def _make_durable(self, event: dict[str, Any]) -> None:
        """An event the full disk could not take is only in memory: it becomes durable when
        the server holds it, so it is sent at once (within the tap's budget). If the server
        does not take it either, JournalFull: nothing may act on a decision nobody kept."""
        if not (event.get("detail") or {}).get("journal_overflow"):
            return
        with contextlib.suppress(Exception):  # any failure leaves it held: judged below
            await asyncio.wait_for(self._uploader.drain_once(), OVERFLOW_UPLOAD_S)
        if self._journal.holds(int(event["seq"])):
            raise JournalFull(f"event {event['seq']}: disk full and the server did not take it")

    def _decision_fields(self, decision: Decision, decided_ms: float) -> dict[str, Any]:
        """The decision's audit event; ``latency_ms`` is credential complete -> decided,
        since playback has not started when the event must already be durable."""
        detail: dict[str, Any] = {"reasons": list(decision.reasons), "tap_id": decision.tap_id}
        if decision.error:
            detail["error"] = decision.error
        return {
            "kind": "decision",
            "outcome": decision.outcome,
            "prompt": decision.prompt,
            "masked_id": decision.masked_id or None,  # unreadable cards, unresolved QR
            "pseudonym": decision.pseudonym or None,
            "offline": decision.offline,
            "cache_age_s": decision.cache_age_s,
            "latency_ms": round(decided_ms, 2),
            # trust as it stands when the event is stamped: a step of the wall clock since
            # the decision (seen by the trust check itself) makes the event's time unvouched
            "clock_trusted": decision.clock_trusted and self._verifier.clock.trusted(),
            "detail": detail,
        }

    async def _actuate(
        self, decision: Decision, completed_at: float, card_type: str = "resident"
    ) -> tuple[float | None, list[str]]:
        """Gate and voice for a journalled decision: (playback latency or None, problems).

        ``card_type`` lets a foreigner's card hear the prompt in a second language too."""
        problems: list[str] = []
        if self._gate is not None:
            try:
                self._gate.show(decision.outcome)
                if decision.outcome == "pass":
                    self._gate.open_pulse()
            except Exception as exc:
                problems.append(f"gate: {exc}")
                log.exception("gate action failed")
        latency_ms: float | None = None
        try:
            started = await self._voice.say(
                decision.prompt, outcome=decision.outcome, card_type=card_type
            )
            latency_ms = (started - completed_at) * 1000.0
        except KioskError as exc:
            problems.append(f"voice: {exc}")
            log.error("prompt not played: %s", exc)
        return latency_ms, problems

    async def _tell(self, result: TapResult) -> TapResult:
        self.counters.told(result)
        log_tap(result)
        for listener in self._listeners:
            maybe = listener(result)
            if maybe is not None:
                await maybe
        return result

    # -- fleet configuration ---------------------------------------------------------------
    def apply_config(self, version: int, config: dict[str, Any]) -> None:
        """Take the merged fleet < site < device configuration from a heartbeat answer: the
        numbers at once, the ``voice.*`` settings through :attr:`voice_sync` (which may fetch
        a voice pack first); ``config_applied`` is journalled when both are done."""
        applied: dict[str, float] = {}
        refused: dict[str, str] = {}
        for key, raw in config.items():
            if key in VOICE_KEYS:
                continue  # checked once, by RemoteVoice.from_config below
            try:
                if key in REMOTE_SETTINGS:
                    applied[key] = remote_number(key, raw)
                else:
                    check_remote_setting(key, raw)  # refuses the key as unknown
            except SettingError as exc:
                refused[key] = str(exc)
        remote, voice_refused = RemoteVoice.from_config(config)
        refused.update(voice_refused)
        if "verify.deadline_s" in applied:
            self._verifier.deadline_s = applied["verify.deadline_s"]
        if "heartbeat.interval_s" in applied:
            self._heartbeat_interval = applied["heartbeat.interval_s"]
        if "upload.interval_s" in applied:
            self._uploader.interval_s = applied["upload.interval_s"]
        if refused:
            log.warning("fleet configuration v%d: ignored %s", version, refused)
        self.config_version = version
        detail: dict[str, Any] = {"version": version, "applied": applied, "ignored": refused}
        self._spawn(self._apply_voice(detail, remote), "config")

    async def _apply_voice(self, detail: dict[str, Any], remote: RemoteVoice) -> None:
        """Hand the ``voice.*`` settings to the voice (a pack may be fetched first), then
        journal ``config_applied`` with what became of them."""
        if self.voice_sync is not None:
            try:
                detail["voice"] = await self.voice_sync.apply(remote)
            except Exception as exc:  # the numbers above are applied: journal them anyway
                log.exception("remote voice settings not applied")
                detail["voice"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        await self._journal_system("config_applied", detail)

    async def _retry_voice(self) -> None:
        """A voice pack that could not be fetched is tried again after each heartbeat, even
        when the configuration did not change; journalled once it is settled."""
        sync = self.voice_sync
        if sync is None:
            return
        report = await sync.retry()
        if report is not None and sync.pending is None:
            detail = {"version": self.config_version, "voice": report, "retry": True}
            await self._journal_system("config_applied", detail)

    # -- guards' commands (verified by device/link/commands.py) ----------------------------
    async def execute_command(self, cmd: SignedCommand) -> str:
        """Carry out a verified command: "" when done, else what went wrong."""
        try:
            if cmd.command == "gate_open":
                return await self._guard_open(cmd)
            if cmd.command == "config_reload":
                self._client.config_version = None  # the answer's config is applied again
                await self._client.heartbeat(await self.status())
                return ""
            if cmd.command == "speak_test":
                await self._voice.say(self._test_prompt, outcome="generic")
                return ""
        except (KioskError, ValueError) as exc:
            log.error("command %s (%s) failed: %s", cmd.command, cmd.id, exc)
            return f"{type(exc).__name__}: {exc}"[:200]
        return "unknown command"

    async def _guard_open(self, cmd: SignedCommand) -> str:
        """A guard's remote gate open: journalled (who, why) before the relay pulses."""
        if self._gate is None:
            return "this kiosk drives no gate"
        spoken = bool(self._gate_prompt)
        detail = {
            "command": cmd.command,
            "by": str(cmd.args.get("by", "")),
            "reason": str(cmd.args.get("reason", "")),
            "command_id": cmd.id,
        }
        await self._journal.append(
            {**self._system_fields("guard", detail), "prompt": self._gate_prompt or None}
        )
        self._uploader.poke()
        try:
            self._gate.open_pulse()
        except Exception as exc:
            await self.record_fault("gate_fault", f"remote open: {exc}", speak=False)
            return f"gate: {exc}"[:200]
        if spoken:
            with contextlib.suppress(KioskError):
                await self._voice.say(self._gate_prompt, outcome="generic")
        return ""

    async def _command_refused(self, command_id: str, why: str) -> None:
        """A command that failed its check (forged, another kiosk's, expired) is audited."""
        await self._journal_system("command_refused", {"command_id": command_id, "why": why})

    # -- faults ----------------------------------------------------------------------------
    def _reader_event_threadsafe(self, what: str, detail: dict[str, Any]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(
            lambda: self._spawn(self._reader_event(what, detail), f"reader-{what}")
        )

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _reader_event(self, what: str, detail: dict[str, Any]) -> None:
        """Source state changes: `<part>_lost` / `<part>_init_failed` are faults (reader,
        camera, sscard), `<part>_ready` after a fault is a recovery."""
        part, _, state = what.partition("_")
        if state in ("lost", "init_failed"):
            self.counters.reader_error()
            self._faulty.add(part)
            await self.record_fault(what, str(detail.get("error", "")))
        elif state == "ready" and part in self._faulty:
            self._faulty.discard(part)
            await self._journal_system(f"{part}_recovered", detail)
        elif what == "card_unreadable":
            self.counters.reader_error()
            await self._journal_system("card_unreadable", detail)
        elif what == "qr_rejected":
            # A code was shown but it is garbage (too long, not text): the citizen still
            # hears that the credential is invalid.
            await self.submit(
                Credential(
                    kind="qr",
                    id_number="",
                    completed_at=time.monotonic(),
                    source="camera",
                    readable=False,
                )
            )

    async def record_fault(
        self, what: str, error: str, *, speak: bool = True, tap_id: str | None = None
    ) -> None:
        """A device fault: journalled, signalled on the buzzer and (optionally) spoken;
        ``tap_id`` ties a fault during a tap (voice, gate) to that tap's decision."""
        prompt = self._fault_prompt
        if self._gate is not None:
            try:
                self._gate.fault()
            except Exception:
                log.exception("gate fault signal failed")
        spoken = False
        if speak:
            try:
                await self._voice.say(prompt, outcome="fault")
                spoken = True
            except KioskError as exc:
                log.error("fault prompt not played: %s", exc)
        await self._journal.append(
            {
                "kind": "fault",
                "outcome": "fault",
                "prompt": prompt if spoken else None,
                "clock_trusted": self._verifier.clock.trusted(),
                "detail": {
                    "fault": what,
                    "error": error[:500],
                    **({"tap_id": tap_id} if tap_id else {}),
                },
            }
        )
        self._uploader.poke()

    async def _journal_system(self, what: str, detail: dict[str, Any]) -> None:
        await self._journal.append(self._system_fields("system", {"event": what, **detail}))
        self._uploader.poke()

    def _system_fields(self, kind: str, detail: dict[str, Any]) -> dict[str, Any]:
        """A journal event that is no tap: nobody's id, no outcome (the journal fills in the
        fields a tap would have with their empty defaults)."""
        return {"kind": kind, "clock_trusted": self._verifier.clock.trusted(), "detail": detail}

    # -- health ----------------------------------------------------------------------------
    async def status(self) -> dict[str, Any]:
        reader = self._reader.health() if self._reader is not None else None
        others = [s.health() for s in self._sources if s is not self._reader]
        pending = await self._journal.count()
        return {
            "boot_id": self.boot_id,
            "uptime_s": round(time.monotonic() - self._started, 1),
            "version": VERSION,
            "clock_trusted": self._verifier.clock.trusted(),
            "wall_time": dt.datetime.now(dt.UTC).isoformat(),
            "journal_pending": pending,
            "journal": await self._journal.state(),  # full, reserve, dead letters, lost
            "taps": self._taps,
            "command_link": (
                {
                    "connected": self.commands.connected,
                    "executed": self.commands.executed,
                    "refused": dict(self.commands.refused),
                }
                if self.commands is not None
                else None
            ),
            "config_version": self.config_version,
            "dropped_credentials": self.dropped_credentials,
            "upload": {"uploaded": self._uploader.uploaded, "failures": self._uploader.failures},
            "reader": reader,
            "sources": others,
            "circuit": {
                "state": self._verifier.breaker.state,
                "opened": self._verifier.breaker.opened,
            },
            "audio": self._audio_health(),
            "cache": self._cache_status(),
            "update": self._update_report(),
            "counters": msgspec.to_builtins(self.counters.snapshot(pending)),
        }

    def _audio_health(self) -> dict[str, Any]:
        """The voice's health, with what keeps a wanted voice pack from being spoken, so a
        rollout of new words that stalls on some kiosks shows in their heartbeats."""
        health = self._voice.health()
        problem = self.voice_sync.problem if self.voice_sync is not None else None
        if problem is not None:
            health["pack_problem"] = problem
        return health

    def _update_report(self) -> dict[str, Any] | None:
        report = self.updater.report() if self.updater is not None else None
        return None if report is None else dict(msgspec.to_builtins(report))

    def _cache_status(self) -> dict[str, Any] | None:
        """The cache's counters, its age limit and, when site snapshots are loaded, the
        installed one's ``generated_at`` (the server alerts when it is past the limit)."""
        cache = self._verifier.cache
        if cache is None:
            return None
        status: dict[str, Any] = {
            "hits": cache.hits,
            "misses": cache.misses,
            "expired": cache.expired,
            "max_age_s": cache.max_age_s,
        }
        if self._snapshots is not None:
            status["snapshot_at"] = cache.snapshot_at
        return status

    async def heartbeat_once(self) -> dict[str, Any]:
        """Send the status now; the server's clock is observed and a final update state it
        stored is not reported again."""
        status = await self.status()
        sent = time.monotonic()
        answer = await self._client.heartbeat(status)
        server_time = answer.get("server_time")
        if isinstance(server_time, str):
            self._verifier.clock.observe_server_time(server_time, time.monotonic() - sent)
        if self.updater is not None:
            await self.updater.delivered(status.get("update"))
        return answer

    async def _heartbeat_loop(self) -> None:
        failing = False
        while True:
            try:
                answer = await self.heartbeat_once()
                if self.commands is not None and answer.get("commands"):
                    await self.commands.accept_all(answer["commands"])
                sync = self.voice_sync
                if sync is not None and sync.pending is not None and not sync.busy:
                    self._spawn(self._retry_voice(), "voice-retry")
                if failing:
                    log.info("heartbeat recovered")
                failing = False
            except ServerError as exc:
                if not failing:
                    log.warning("heartbeat failed: %s", exc)
                failing = True
            except Exception:  # the heartbeat must outlive any one bad answer
                if not failing:
                    log.exception("heartbeat failed unexpectedly")
                failing = True
            await asyncio.sleep(jittered(self._heartbeat_interval))
