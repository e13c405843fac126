"""Builds a running kiosk agent from validated configuration.

Kept apart from `agent.py` so tests and the demo can swap the edges (player, pin factory,
reader URL) without touching the wiring, the way gpiozero devices take a `pin_factory=`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from core.bundle import Bundle
from core.outcomes import DEFAULT_PROMPTS
from device.acting.gate import Gate
from device.acting.voice import Player, PromptRenderer, Voice, make_player
from device.agent import Agent, CredentialSource, GateActions
from device.config import DeviceConfig, load_bundle
from device.deciding.cache import KioskCache
from device.deciding.clock import ClockTrust
from device.deciding.snapshot import SnapshotLoader
from device.deciding.verifier import Verifier
from device.link.breaker import CircuitBreaker
from device.link.client import ServerClient
from device.link.identity import DeviceIdentity
from device.recording.journal import Journal
from device.recording.uploader import Uploader
from device.sources.cardreader import CardReader
from device.sources.mculink import McuGate, McuLink

log = logging.getLogger(__name__)


def make_pin_factory(name: str) -> Any:
    """gpiozero pin factory by config name; '' keeps gpiozero's own default choice."""
    if not name:
        return None
    if name == "mock":
        from gpiozero.pins.mock import MockFactory

        return MockFactory()
    if name == "lgpio":
        from gpiozero.pins.lgpio import LGPIOFactory

        return LGPIOFactory()
    if name == "rpigpio":
        from gpiozero.pins.rpigpio import RPiGPIOFactory

        return RPiGPIOFactory()
    if name == "pigpio":
        from gpiozero.pins.pigpio import PiGPIOFactory

        return PiGPIOFactory()
    from gpiozero.pins.native import NativeFactory

    return NativeFactory()


def warn_about_transport(server_url: str, tls_ca: str) -> None:
    """Say loudly when the kiosk talks to its server without a pinned, encrypted channel."""
    if server_url.startswith("http://") and not server_url.startswith(
        ("http://127.", "http://localhost")
    ):
        log.warning(
            "server %s is plain HTTP: lookups and audit cross the network unencrypted; "
            "serve HTTPS and provision the fleet CA (kiosk provision init --tls-ca)",
            server_url,
        )
    elif server_url.startswith("https://") and not tls_ca.strip():
        log.warning(
            "server %s is HTTPS but the bundle pins no fleet CA: any certificate the system "
            "trusts is accepted",
            server_url,
        )


def credential_sources(config: DeviceConfig) -> list[CredentialSource]:
    """The sources besides the ID-card reader that the configuration turns on."""
    sources: list[CredentialSource] = []
    if config.camera.enabled:
        from device.sources.camera import OpenCvCamera
        from device.sources.qrscan import QrScanner

        cam = config.camera
        camera = OpenCvCamera(cam.source, width=cam.width, height=cam.height, fps=cam.fps)
        sources.append(
            QrScanner(
                camera, dedupe_s=cam.dedupe_s, max_payload=cam.max_payload, stall_s=cam.stall_s
            )
        )
    if config.sscard.enabled:
        from device.sources.sscard import PcscCardFactory, SsCardReader

        sources.append(
            SsCardReader(
                PcscCardFactory(config.sscard.reader_name or None),
                poll_interval_s=config.sscard.poll_interval_s,
            )
        )
    return sources


@contextlib.asynccontextmanager
async def built_agent(
    config: DeviceConfig,
    *,
    bundle: Bundle | None = None,
    player: Player | None = None,
    pin_factory: Any = None,
    reader: CredentialSource | bool | None = True,
    client: ServerClient | None = None,
    journal_max_pages: int | None = None,
    extra_sources: Sequence[CredentialSource] | None = None,
) -> AsyncIterator[Agent]:
    """An agent built from config, started, and stopped (resources closed) on exit.

    Every resource is registered on one exit stack as soon as it exists, so a failure while
    building (a missing audio player, GPIO that is not there) closes what was already open.
    """
    bundle = bundle or load_bundle(Path(config.bundle))
    state = Path(config.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    boot_id = uuid.uuid4().hex
    async with contextlib.AsyncExitStack() as stack:
        if client is None:
            warn_about_transport(config.server_url or bundle.server_url, bundle.tls_ca)
            client = ServerClient(
                config.server_url or bundle.server_url,
                DeviceIdentity.from_bundle(
                    bundle.device_id, bundle.private_key, Path(config.bundle)
                ),
                tls_ca=bundle.tls_ca,
            )
        stack.push_async_callback(client.close)
        journal = Journal(
            state / "journal.db", bundle.device_id, boot_id, max_pages=journal_max_pages
        )
        await journal.open()
        stack.push_async_callback(journal.close)
        cache_dir = Path(config.voice.cache_dir) if config.voice.cache_dir else state / "prompts"
        renderer = PromptRenderer(cache_dir, voice=config.voice.voice, rate=config.voice.rate)
        prompts = {outcome: config.voice.prompt(outcome) for outcome in DEFAULT_PROMPTS}
        voice = Voice(renderer, player or make_player(config.voice.player), prompts)
        stack.push_async_callback(voice.close)
        card_reader: CredentialSource | None
        gate: GateActions | None = None
        mcu: McuLink | None = None
        if reader is True and config.reader.wiring == "mcu":
            # The MCU polls the SAM and drives the relay and lights itself.
            mcu = McuLink(config.reader.url, baudrate=config.reader.baudrate)
            gate = McuGate(mcu, relay_pulse_s=config.gpio.relay_pulse_s)
        elif config.gpio.enabled:
            gate = Gate(
                config.gpio.relay_pin,
                config.gpio.green_led_pin,
                config.gpio.red_led_pin,
                config.gpio.buzzer_pin,
                relay_pulse_s=config.gpio.relay_pulse_s,
                active_high=config.gpio.active_high,
                pin_factory=pin_factory or make_pin_factory(config.gpio.pin_factory),
            )
            stack.callback(gate.close)
        if mcu is not None:
            card_reader = mcu
        elif reader is True:
            card_reader = CardReader(
                config.reader.url,
                baudrate=config.reader.baudrate,
                poll_interval_s=config.reader.poll_interval_s,
                command_timeout_s=config.reader.command_timeout_s,
                read_timeout_s=config.reader.read_timeout_s,
                reconnect_interval_s=config.reader.reconnect_interval_s,
            )
        else:
            card_reader = reader or None
        cache = None
        if config.cache.enabled:
            cache = KioskCache(
                state / "cache.db",
                max_age_s=config.cache.max_age_s,
                max_entries=config.cache.max_entries,
            )
            await cache.open()
            stack.push_async_callback(cache.close)
        verifier = Verifier(
            client,
            config.voice.prompt,
            bundle.site_key_bytes,
            config.verify.deadline_s,
            cache=cache,
            breaker=CircuitBreaker(
                threshold=config.verify.circuit_threshold,
                cooldown_s=config.verify.circuit_cooldown_s,
                max_cooldown_s=config.verify.circuit_max_cooldown_s,
            ),
            clock=ClockTrust(tolerance_s=config.verify.clock_tolerance_s),
            server_key_hex=bundle.server_key,
            site=bundle.site,
        )
        stack.push_async_callback(verifier.flush)
        snapshots = None
        if cache is not None and config.cache.snapshot_interval_s and bundle.server_key:
            snapshots = SnapshotLoader(
                client,
                cache,
                server_key_hex=bundle.server_key,
                site=bundle.site,
                interval_s=config.cache.snapshot_interval_s,
            )
        uploader = Uploader(
            journal,
            client,
            interval_s=config.upload.interval_s,
            batch_size=config.upload.batch_size,
        )
        if extra_sources is None:
            extra_sources = credential_sources(config)
        agent = Agent(
            device_id=bundle.device_id,
            client=client,
            verifier=verifier,
            voice=voice,
            gate=gate,
            journal=journal,
            uploader=uploader,
            reader=card_reader,
            extra_sources=extra_sources,
            heartbeat_interval_s=config.heartbeat.interval_s,
            boot_id=boot_id,
            fault_prompt=config.voice.prompt("fault"),
            snapshots=snapshots,
        )
        client.on_config = agent.apply_config
        stack.push_async_callback(agent.stop)
        await agent.start()
        yield agent


async def run_device(config: DeviceConfig) -> None:
    """`kiosk device run`: until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with built_agent(config) as agent:
        log.info("kiosk %s running", agent.device_id)
        await stop.wait()
