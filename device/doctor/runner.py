"""Runs every check with a time limit, side by side, and collects them in a fixed order.

Checks that depend on one another run as a chain (serial port → reader; server → tls →
session → clock); the chains and the independent checks run concurrently, so doctor takes
about as long as its slowest check, bounded by ``timeout_s`` each, even with the server down.
A check that overruns its limit or raises is itself a failed check: doctor never dies of
what it diagnoses.
"""

from __future__ import annotations

import asyncio
import functools
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from device.acting.voice import PromptRenderer, check_wav
from device.config import DeviceConfig
from device.doctor import camera, groups, local, network, outputs, qrdecoder, reader
from device.doctor.context import DEFAULT_TIMEOUT_S, DoctorContext, Probes, Thresholds
from device.doctor.model import CheckResult, Report, fail
from device.errors import VoiceError

#: The order of the report (docs/doctor.md lists the same).
CHECKS = (
    "config",
    "key_file",
    "serial_port",
    "reader",
    "groups",
    "gpio",
    "audio",
    "prompts",
    "camera",
    "qr_decoder",
    "clock",
    "server",
    "tls",
    "session",
    "disk",
    "journal",
)


async def _guard(name: str, run: Callable[[], Awaitable[CheckResult]], limit: float) -> CheckResult:
    """The check's result, or a failure naming why it gave none."""
    try:
        async with asyncio.timeout(limit):
            return await run()
    except TimeoutError:
        return fail(name, f"no result within {limit:.1f} s", "run `kiosk doctor -v` to see where")
    except Exception as exc:
        return fail(name, f"check failed unexpectedly: {type(exc).__name__}: {exc}", "report it")


class _Run:
    """One doctor run: the context, its results, and the chains that fill them."""

    def __init__(self, ctx: DoctorContext, scratch: Path) -> None:
        self.ctx = ctx
        self.scratch = scratch
        self.results: dict[str, CheckResult] = {}
        self.limit = ctx.timeout_s + 0.5  # a check's own waits end first; this is the backstop

    async def threaded(self, name: str, fn: Callable[[], CheckResult], limit: float = 0) -> None:
        """A blocking check on its own thread."""
        wait = limit or self.limit
        self.results[name] = await _guard(name, lambda: self.ctx.blocking(fn, wait), wait + 0.1)

    async def reader_chain(self) -> None:
        await self.threaded("serial_port", lambda: reader.check_serial_port(self.ctx))
        port = self.results["serial_port"]
        await self.threaded("reader", lambda: reader.check_reader(self.ctx, port))

    async def network_chain(self) -> None:
        chain: tuple[tuple[str, Callable[[DoctorContext], Awaitable[CheckResult]]], ...] = (
            ("server", network.check_server),
            ("tls", network.check_tls),
            ("session", network.check_session),
            ("clock", network.check_clock),
        )
        for name, check in chain:
            self.results[name] = await _guard(name, functools.partial(check, self.ctx), self.limit)

    async def audio(self) -> None:
        clip = None if self.ctx.quiet_audio else _test_clip(self.ctx)
        length = _length(clip)
        await self.threaded(
            "audio",
            lambda: outputs.check_audio(self.ctx, clip, self.scratch, quiet=self.ctx.quiet_audio),
            max(self.limit, length + 1.5),
        )

    async def all(self) -> Report:
        ctx = self.ctx
        await self.threaded("config", lambda: local.check_config(ctx))
        await asyncio.gather(
            self.threaded("key_file", lambda: local.check_key_file(ctx)),
            self.threaded("disk", lambda: local.check_disk(ctx)),
            self.threaded("journal", lambda: local.check_journal(ctx)),
            self.threaded("prompts", lambda: local.check_prompts(ctx)),
            self.threaded("groups", lambda: groups.check_groups(ctx)),
            self.threaded("gpio", lambda: outputs.check_gpio(ctx)),
            self.threaded("camera", lambda: camera.check_camera(ctx)),
            self.threaded("qr_decoder", lambda: qrdecoder.check_qr_decoder(ctx)),
            self.audio(),
            self.reader_chain(),
            self.network_chain(),
        )
        return Report([self.results[name] for name in CHECKS])


def _test_clip(ctx: DoctorContext) -> Path | None:
    """The rendered "speak test" prompt, when the cache holds a valid one."""
    voice = ctx.config.voice
    renderer = PromptRenderer.for_settings(ctx.prompt_dir, voice)
    path = renderer.path_for(ctx.config.commands.test_prompt)
    return path if _length(path) else None


def _length(path: Path | None) -> float:
    if path is None:
        return 0.0
    try:
        return check_wav(path)
    except (VoiceError, OSError):
        return 0.0


async def run_doctor_async(
    config: DeviceConfig,
    *,
    pin_factory: Any = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    probes: Probes | None = None,
    thresholds: Thresholds | None = None,
    quiet_audio: bool = False,
) -> Report:
    """Every check against ``config``; for callers already inside an event loop."""
    ctx = DoctorContext(
        config,
        pin_factory=pin_factory,
        timeout_s=timeout_s,
        probes=probes or Probes(),
        thresholds=thresholds or Thresholds(),
        quiet_audio=quiet_audio,
    )
    with tempfile.TemporaryDirectory(prefix="kiosk-doctor-") as scratch:
        return await _Run(ctx, Path(scratch)).all()


def run_doctor(
    config: DeviceConfig,
    *,
    pin_factory: Any = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    probes: Probes | None = None,
    thresholds: Thresholds | None = None,
    quiet_audio: bool = False,
) -> Report:
    """Every check against ``config`` (``kiosk doctor``, the updater's boot check).

    ``pin_factory`` replaces the configured gpiozero factory (tests: ``MockFactory``);
    ``timeout_s`` bounds each check; ``quiet_audio`` plays silence instead of the test
    prompt. Starts its own event loop: from async code use :func:`run_doctor_async`.
    """
    return asyncio.run(
        run_doctor_async(
            config,
            pin_factory=pin_factory,
            timeout_s=timeout_s,
            probes=probes,
            thresholds=thresholds,
            quiet_audio=quiet_audio,
        )
    )
