"""A healthy kiosk for doctor to examine: the real server with this kiosk provisioned, the
simulated SAM on a pty, gpiozero's MockFactory, ALSA's null device, a rendered prompt cache
and a video file as the camera. Each test breaks one thing and expects that check to say so.
"""

from __future__ import annotations

import wave
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestServer
from gpiozero.pins.mock import MockFactory

from device.acting.voice import PromptRenderer
from device.config import DeviceConfig
from device.doctor import Probes, Report, run_doctor_async
from device.doctor.context import DoctorContext
from device.doctor.local import prompt_texts
from firmware_bridge.samsim import SimulatedSam
from firmware_bridge.simserve import SimulatedReaderPort
from provisioning.registry import add_device, write_bundle
from server.app import create_app
from server.config import ServerConfig
from siheyi.cli import local_fleet
from tests.device import qrframes

#: Each check's limit in the tests: long enough for a loaded CI machine, short enough that
#: the failure cases (a silent SAM, a server that is down) stay quick.
TIMEOUT_S = 2.0


@dataclass
class Server:
    url: str
    db: Path


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    """The real server app on loopback, this kiosk provisioned (bundle 0600 in tmp_path)."""
    db = tmp_path / "server.db"
    test_server = TestServer(create_app(ServerConfig.default(database=db)))
    await test_server.start_server()
    url = str(test_server.make_url("")).rstrip("/")
    issued = add_device(local_fleet(None, db), "SN-DOCTOR-1", "site-a", server_url=url)
    write_bundle(issued, tmp_path / "bundle.json")
    try:
        yield Server(url, db)
    finally:
        await test_server.close()


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimulatedReaderPort]:
    port = SimulatedReaderPort(SimulatedSam(), link=tmp_path / "reader").start()
    yield port
    port.stop()


@pytest.fixture
def pin_factory() -> Iterator[MockFactory]:
    factory = MockFactory()
    yield factory
    factory.close()


def write_wav(path: Path, seconds: float = 0.05) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(b"\0\0" * int(16000 * seconds))
    return path


def render_prompts(config: DeviceConfig) -> list[Path]:
    """Fill the prompt cache as the agent would (valid WAVs at the renderer's paths), without
    espeak: doctor checks that the cache is complete, not how it was filled."""
    ctx = DoctorContext(config)
    voice = config.voice
    renderer = PromptRenderer.for_settings(ctx.prompt_dir, voice)
    return [write_wav(renderer.path_for(text)) for text in prompt_texts(ctx)]


@pytest.fixture
def video(tmp_path: Path) -> Path:
    frames = [np.full((qrframes.HEIGHT, qrframes.WIDTH, 3), 40 * i, np.uint8) for i in range(5)]
    return qrframes.write_video(frames, tmp_path / "camera.avi")


def make_config(
    tmp_path: Path, sim: SimulatedReaderPort, video: Path, **sections: Any
) -> DeviceConfig:
    data: dict[str, Any] = {
        "bundle": str(tmp_path / "bundle.json"),
        "state_dir": str(tmp_path / "kiosk"),
        "reader": {"url": sim.path},
        "voice": {"player": "aplay:null", "cache_dir": str(tmp_path / "prompts")},
        "gpio": {"pin_factory": "mock"},
        "camera": {"enabled": True, "source": str(video)},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return DeviceConfig.from_dict(data)


#: The machine of a healthy kiosk: NTP synchronised, no agent running.
HEALTHY = Probes(ntp=lambda: True, agents=lambda: [])


@dataclass
class Kiosk:
    """A healthy kiosk; ``run`` examines it, with some part replaced."""

    tmp_path: Path
    server: Server
    sim: SimulatedReaderPort
    video: Path
    pin_factory: MockFactory
    config: DeviceConfig

    async def run(
        self,
        config: DeviceConfig | None = None,
        *,
        probes: Probes = HEALTHY,
        **kwargs: Any,
    ) -> Report:
        kwargs.setdefault("pin_factory", self.pin_factory)
        kwargs.setdefault("timeout_s", TIMEOUT_S)
        return await run_doctor_async(config or self.config, probes=probes, **kwargs)

    def probes(self, **changes: Any) -> Probes:
        return replace(HEALTHY, **changes)

    def configured(self, **sections: Any) -> DeviceConfig:
        return make_config(self.tmp_path, self.sim, self.video, **sections)


@pytest.fixture
async def kiosk(
    tmp_path: Path,
    server: Server,
    sim: SimulatedReaderPort,
    video: Path,
    pin_factory: MockFactory,
) -> Kiosk:
    config = make_config(tmp_path, sim, video)
    render_prompts(config)
    return Kiosk(tmp_path, server, sim, video, pin_factory, config)


Edit = Callable[[Kiosk], Any]
