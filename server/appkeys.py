"""Every typed ``web.AppKey`` / ``web.RequestKey`` of the server, in one place."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from aiohttp import web

from server.config import ServerConfig
from server.db import Database
from server.devices import Device
from server.sources import SourceAdapter
from server.verify import Verifier

SourceFactory = Callable[[Database], Sequence[SourceAdapter]]
Clock = Callable[[], datetime]

CONFIG = web.AppKey("config", ServerConfig)
DATABASE = web.AppKey("database", Database)
VERIFIER = web.AppKey("verifier", Verifier)
SOURCE_FACTORY: web.AppKey[SourceFactory] = web.AppKey("source_factory")
CLOCK: web.AppKey[Clock] = web.AppKey("clock")

DEVICE = web.RequestKey("device", Device)
