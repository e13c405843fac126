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
from core.systemd import notify_ready, notify_stopping, watchdog_loop
from device.acting.gate import Gate
from device.acting.packs import StoredVoice, pack_store
from device.acting.tuning import VoiceRecipe, release_key, starting_voice
from device.acting.voice import Player, Voice, make_player
from device.agent import VERSION, Agent, CredentialSource, GateActions
from device.config import DeviceConfig, load_bundle
from device.deciding.cache import KioskCache
from device.deciding.clock import ClockTrust
from device.deciding.snapshot import SnapshotLoader
from device.deciding.verifier import Verifier
from device.errors import NoQrDecoder
from device.link.breaker import CircuitBreaker
from device.link.client import ServerClient
from device.link.identity import DeviceIdentity
from device.recording.journal import Journal
from device.recording.uploader import Uploader
from device.sources.cardreader import CardReader
from device.sources.mculink import McuGate, McuLink
from device.update.settings import UpdateSettings
from device.update.updater import Updater
from device.voicesync import VoiceSync

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
        from device.sources.qrscan import QrDecoder, QrScanner

        cam = config.camera
        camera = OpenCvCamera(cam.source, width=cam.width, height=cam.height, fps=cam.fps)
        try:
            decoder = QrDecoder(backend=cam.decoder)
        except NoQrDecoder as exc:  # cards still work; `kiosk doctor` names the fix
            log.error("camera disabled: %s", exc)
        else:
            log.info("qr decoding with %s", decoder.decoder_names)
            sources.append(
                QrScanner(
                    camera,
                    dedupe_s=cam.dedupe_s,
                    max_payload=cam.max_payload,
                    stall_s=cam.stall_s,
                    decoder=decoder,
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


def _server_client(config: DeviceConfig, bundle: Bundle) -> ServerClient:
    url = config.server_url or bundle.server_url
    warn_about_transport(url, bundle.tls_ca)
    identity = DeviceIdentity.from_bundle(bundle.device_id, bundle.private_key, Path(config.bundle))
    return ServerClient(url, identity, tls_ca=bundle.tls_ca)


def voice_for(
    config: DeviceConfig,
    state: Path,
    player: Player | None = None,
    stored: StoredVoice | None = None,
) -> Voice:
    """The agent's voice for `config`: prompts, recorded clips, schedule, second language,
    with the remote settings and voice pack it was last given (a kiosk that starts without
    network speaks the words an admin last sent it; ``stored``: already read)."""
    recipe, parts, refused = starting_voice(config, state, stored)
    if refused:
        log.warning("remote voice settings partly refused: %s", refused)
    return Voice(
        recipe.renderer(),
        player or make_player(config.voice.player),
        parts.prompts,
        library=parts.library,
        schedule=parts.schedule,
        volume_dir=recipe.cache_dir / "volume",
        second_language=parts.second_language,
        remote_words=parts.remote_words,
        pack=parts.pack,
    )


def _voice_sync(
    config: DeviceConfig, state: Path, voice: Voice, client: ServerClient, stored: StoredVoice
) -> VoiceSync:
    """Remote voice settings and packs from heartbeat answers, applied to ``voice`` (which
    was built from ``stored``)."""
    recipe = VoiceRecipe.from_config(config, state)
    return VoiceSync(voice, recipe, pack_store(state), client, release_key(config), stored)


def _gate_and_reader(
    config: DeviceConfig,
    reader: CredentialSource | bool | None,
    pin_factory: Any,
    stack: contextlib.AsyncExitStack,
) -> tuple[GateActions | None, CredentialSource | None]:
    """The gate and the ID-card reader: behind an MCU both are the one link (the MCU polls
    the SAM and drives the relay and lights itself); wired directly they are GPIO and serial.
    ``reader`` True builds the configured reader; a source replaces it; None/False: none."""
    if reader is True and config.reader.wiring == "mcu":
        mcu = McuLink(config.reader.url, baudrate=config.reader.baudrate)
        return McuGate(mcu, relay_pulse_s=config.gpio.relay_pulse_s), mcu
    gate: GateActions | None = None
    if config.gpio.enabled:
        gpio = config.gpio
        gate = Gate(
            gpio.relay_pin,
            gpio.green_led_pin,
            gpio.red_led_pin,
            gpio.buzzer_pin,
            relay_pulse_s=gpio.relay_pulse_s,
            active_high=gpio.active_high,
            pin_factory=pin_factory or make_pin_factory(gpio.pin_factory),
        )
        stack.callback(gate.close)
    if reader is not True:
        return gate, reader or None
    r = config.reader
    return gate, CardReader(
        r.url,
        baudrate=r.baudrate,
        poll_interval_s=r.poll_interval_s,
        command_timeout_s=r.command_timeout_s,
        read_timeout_s=r.read_timeout_s,
        reconnect_interval_s=r.reconnect_interval_s,
    )


def _verifier(
    config: DeviceConfig, bundle: Bundle, client: ServerClient, cache: KioskCache | None
) -> Verifier:
    v = config.verify
    return Verifier(
        client,
        config.voice.prompt,
        bundle.site_key_bytes,
        v.deadline_s,
        cache=cache,
        breaker=CircuitBreaker(
            threshold=v.circuit_threshold,
            cooldown_s=v.circuit_cooldown_s,
            max_cooldown_s=v.circuit_max_cooldown_s,
        ),
        clock=ClockTrust(tolerance_s=v.clock_tolerance_s),
        server_key_hex=bundle.server_key,
        site=bundle.site,
    )


def _snapshots(
    config: DeviceConfig, bundle: Bundle, client: ServerClient, cache: KioskCache | None
) -> SnapshotLoader | None:
    if cache is None or not config.cache.snapshot_interval_s or not bundle.server_key:
        return None
    return SnapshotLoader(
        client,
        cache,
        server_key_hex=bundle.server_key,
        site=bundle.site,
        interval_s=config.cache.snapshot_interval_s,
    )


async def _open_cache(
    config: DeviceConfig, state: Path, stack: contextlib.AsyncExitStack
) -> KioskCache | None:
    if not config.cache.enabled:
        return None
    cache = KioskCache(
        state / "cache.db", max_age_s=config.cache.max_age_s, max_entries=config.cache.max_entries
    )
    await cache.open()
    stack.push_async_callback(cache.close)
    return cache


def _updater(config: DeviceConfig, client: ServerClient) -> Updater | None:
    """The updater, when ``[update]`` allows it (docs/updates.md)."""
    settings = UpdateSettings.from_config(config)
    if not settings.enabled:
        return None
    return Updater(settings, client, running_version=VERSION)


def _connect_updater(agent: Agent, client: ServerClient) -> None:
    """Offers from heartbeat answers go to the updater, which asks the agent when it is idle,
    to drain, to self-test and to report."""
    updater = agent.updater
    if updater is None:
        return
    client.on_update = updater.offer
    updater.idle_for = agent.idle_for
    updater.drain = agent.drain
    updater.self_test = agent.self_test
    updater.announce = agent.heartbeat_once


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
        client = client or _server_client(config, bundle)
        stack.push_async_callback(client.close)
        journal = Journal(
            state / "journal.db", bundle.device_id, boot_id, max_pages=journal_max_pages
        )
        await journal.open()
        stack.push_async_callback(journal.close)
        stored = pack_store(state).stored(release_key(config))  # read (and verified) once
        voice = voice_for(config, state, player, stored)
        stack.push_async_callback(voice.close)
        gate, card_reader = _gate_and_reader(config, reader, pin_factory, stack)
        cache = await _open_cache(config, state, stack)
        verifier = _verifier(config, bundle, client, cache)
        stack.push_async_callback(verifier.flush)
        voice.clock_trusted = verifier.clock.trusted  # the volume schedule needs local time
        agent = Agent(
            device_id=bundle.device_id,
            client=client,
            verifier=verifier,
            voice=voice,
            gate=gate,
            journal=journal,
            uploader=Uploader(
                journal,
                client,
                interval_s=config.upload.interval_s,
                batch_size=config.upload.batch_size,
            ),
            reader=card_reader,
            extra_sources=credential_sources(config) if extra_sources is None else extra_sources,
            heartbeat_interval_s=config.heartbeat.interval_s,
            boot_id=boot_id,
            fault_prompt=config.voice.prompt("fault"),
            snapshots=_snapshots(config, bundle, client, cache),
            server_key_hex=bundle.server_key if config.commands.enabled else "",
            gate_prompt=config.commands.gate_prompt,
            test_prompt=config.commands.test_prompt,
            updater=_updater(config, client),
            voice_sync=_voice_sync(config, state, voice, client, stored),
        )
        client.on_config = agent.apply_config
        _connect_updater(agent, client)
        stack.push_async_callback(agent.stop)
        await agent.start()
        yield agent


async def run_device(config: DeviceConfig) -> None:
    """`kiosk device run`: until SIGTERM or SIGINT (or the updater asks for a restart).

    Under systemd (deploy/systemd/siheyi-agent.service, Type=notify, WatchdogSec) it says
    READY once the agent has started, pings the watchdog from this event loop (a hung loop
    gets the agent restarted) and says STOPPING on the way out.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    watchdog = asyncio.create_task(watchdog_loop(), name="systemd-watchdog")
    try:
        async with built_agent(config) as agent:
            log.info("kiosk %s running", agent.device_id)
            notify_ready(f"kiosk {agent.device_id} running")
            waits = [asyncio.ensure_future(stop.wait())]
            if agent.updater is not None:  # a switched release: systemd starts it (Restart=always)
                waits.append(asyncio.ensure_future(agent.updater.exit_requested.wait()))
            _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            notify_stopping()
    finally:
        watchdog.cancel()
