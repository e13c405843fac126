"""Every typed ``web.AppKey`` / ``web.RequestKey`` of the server, in one place."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import aiohttp
from aiohttp import web

from server.config import ServerConfig
from server.fleet.devices import Device
from server.fleet.sessions import DeviceDirectory, TokenCodec
from server.http.loginguard import LoginThrottle
from server.offline.keys import SigningKey
from server.offline.snapshot import SnapshotService
from server.storage.db import Database
from server.verify.replay import TapReplay
from server.verify.service import Verifier
from server.verify.sources import SourceAdapter

SourceFactory = Callable[[Database], Sequence[SourceAdapter]]
Clock = Callable[[], datetime]

CONFIG = web.AppKey("config", ServerConfig)
DATABASE = web.AppKey("database", Database)
VERIFIER = web.AppKey("verifier", Verifier)
CLIENT_SESSION = web.AppKey("client_session", aiohttp.ClientSession)
SIGNING_KEY = web.AppKey("signing_key", SigningKey)
SNAPSHOTS = web.AppKey("snapshots", SnapshotService)
SOURCE_FACTORY: web.AppKey[SourceFactory] = web.AppKey("source_factory")
CLOCK: web.AppKey[Clock] = web.AppKey("clock")

DEVICE = web.RequestKey("device", Device)

# Fleet identity (server/sessions.py, server/auth.py, server/admin.py).
TOKENS = web.AppKey("session_tokens", TokenCodec)
DIRECTORY = web.AppKey("device_directory", DeviceDirectory)
REPLAY = web.AppKey("tap_replay", TapReplay)
ADMIN = web.RequestKey("admin", str)  # the authenticated administrator's user name
LOGIN_THROTTLE = web.AppKey("login_throttle", LoginThrottle)
