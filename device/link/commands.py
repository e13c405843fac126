"""The kiosk's end of the command channel: a WebSocket held to ``GET /v1/device/ws``.

The socket rides on the :class:`~device.link.client.ServerClient`'s HTTP session (same
pinned fleet CA, same resolver) and its device session token; a refused token (``401``) makes
the client sign a fresh session before the next attempt. A dropped socket is reopened with
a jittered backoff doubling from :data:`RETRY_FIRST_S` to :data:`RETRY_MAX_S`, so a fleet
does not return in step after a server restart. The server pings; aiohttp answers the pings
by itself, and the kiosk pings too (``heartbeat=``) so it notices a dead server.

Every command is checked before anything happens (:func:`core.commands.refusal`): signed by
the server's key from the bundle, addressed to this kiosk, not expired by the server's clock
as this kiosk knows it, not seen before. The same check guards the commands a heartbeat
answer carries (:meth:`CommandLink.accept`, the fallback when no socket can be held). A
refused command is logged and journalled by the agent, never executed; an executed one is
acknowledged ``{"type": "ack", "id", "ok", "error"?}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import msgspec

from core.commands import SignedCommand, refusal
from device.errors import ServerError
from device.link.client import ServerClient, jittered

log = logging.getLogger(__name__)

PATH = "/v1/device/ws"
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 30.0
#: The kiosk's own pings: a server that stopped answering is left after 1.5 x this.
PING_S = 20.0

#: Executes a verified command; returns "" when done, else what went wrong.
Execute = Callable[[SignedCommand], Awaitable[str]]
#: Told of a refused command: (command id or "", reason).
OnRefused = Callable[[str, str], Awaitable[None]]


class CommandLink:
    """Holds the socket, verifies commands, has them executed and acknowledges them."""

    def __init__(
        self,
        client: ServerClient,
        device_id: str,
        server_key_hex: str,
        execute: Execute,
        *,
        on_refused: OnRefused | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._device_id = device_id
        self._server_key = server_key_hex
        self._execute = execute
        self._on_refused = on_refused
        self._wall_clock = wall_clock
        self._seen: dict[str, int] = {}  # command id -> expires_at, until it expires
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self.connects = 0
        self.executed = 0
        self.refused: dict[str, int] = {}

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    def server_now(self) -> float:
        """The server's clock as this kiosk knows it (its wall clock plus the last skew the
        server reported), which command lifetimes are judged by."""
        return self._wall_clock() + (self._client.clock_skew_s or 0.0)

    # -- the socket --------------------------------------------------------------------------
    async def run(self) -> None:
        """Hold the socket until cancelled, reconnecting with a jittered backoff."""
        retry = RETRY_FIRST_S
        while True:
            try:
                await self._hold()
                retry = RETRY_FIRST_S  # it was up: the next drop starts the backoff afresh
            except (aiohttp.ClientError, OSError, ServerError, TimeoutError) as exc:
                log.info("command channel unavailable (%s); retrying", exc)
            except Exception:  # the channel must outlive any one bad exchange
                log.exception("command channel failed")
            finally:
                self._ws = None
            await asyncio.sleep(jittered(retry, 0.5))
            retry = min(RETRY_MAX_S, retry * 2)

    async def _hold(self) -> None:
        ws = await self._connect()
        self._ws = ws
        self.connects += 1
        log.info("command channel open")
        async with ws:
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    await self._on_text(message.data)
        log.info("command channel closed (%s)", ws.close_code)

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        return await self._client.ws_connect(PATH, heartbeat=PING_S)

    async def _on_text(self, text: str) -> None:
        try:
            data = json.loads(text)
        except ValueError:
            return
        if isinstance(data, dict) and data.get("type") == "command":
            ack = await self.accept(data.get("signed"))
            if ack is not None:
                await self.send_ack(ack)

    async def send_ack(self, ack: dict[str, Any]) -> bool:
        """Send an acknowledgement if the socket is up; whether it went."""
        ws = self._ws
        if ws is None or ws.closed:
            return False
        try:
            await ws.send_json({"type": "ack", **ack})
        except (aiohttp.ClientError, ConnectionError, RuntimeError):
            return False
        return True

    # -- commands ----------------------------------------------------------------------------
    async def accept(self, raw: Any) -> dict[str, Any] | None:
        """Check a signed command and execute it; its acknowledgement, or None for one that
        must not be answered (forged, another kiosk's, a repeat)."""
        try:
            cmd = msgspec.convert(raw, SignedCommand)
        except msgspec.ValidationError:
            await self._refuse("", "malformed")
            return None
        self._forget_expired()
        why = refusal(cmd, self._server_key, self._device_id, self.server_now(), self._seen)
        if why == "replay":
            return None  # delivered twice (socket and heartbeat): done once already
        if why:
            await self._refuse(cmd.id, why)
            return {"id": cmd.id, "ok": False, "error": why} if why == "expired" else None
        self._seen[cmd.id] = cmd.expires_at
        error = await self._execute(cmd)
        self.executed += 1
        return {"id": cmd.id, "ok": not error, **({"error": error} if error else {})}

    async def accept_all(self, commands: Any) -> None:
        """The commands of a heartbeat answer (the fallback path), acknowledged on the
        socket when it is up."""
        if not isinstance(commands, list):
            return
        for raw in commands:
            ack = await self.accept(raw)
            if ack is not None:
                await self.send_ack(ack)

    async def _refuse(self, command_id: str, why: str) -> None:
        self.refused[why] = self.refused.get(why, 0) + 1
        log.warning("command %s refused: %s", command_id or "?", why)
        if self._on_refused is not None:
            await self._on_refused(command_id, why)

    def _forget_expired(self) -> None:
        now = self.server_now()
        for command_id in [c for c, expires in self._seen.items() if expires < now - 60]:
            del self._seen[command_id]
