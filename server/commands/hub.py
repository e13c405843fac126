"""The command hub of one server process: the kiosk sockets it holds, the commands it
signs, and the acknowledgements that answer the guards waiting for them.

A guard's ``POST`` may land on a process that does not hold the kiosk's socket. Then the
signed command goes out on the event bus (kind ``command``); the process holding the socket
passes it on, and publishes the kiosk's acknowledgement as ``command_ack`` (which also tells
the board), and the waiting process answers its guard. On PostgreSQL the bus crosses
processes (``LISTEN``/``NOTIFY``); on SQLite it does not, so with ``--workers N`` on SQLite
a command only reaches kiosks linked to the process the ``POST`` landed on — the others
answer ``504 not_acked`` (docs/commands.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
from aiohttp import WSCloseCode, web

from core.commands import TTL_S, SignedCommand, command_message
from server.commands import links
from server.events import EventBus, publish
from server.fleet.devices import Device
from server.fleet.sessions import DeviceDirectory
from server.offline.keys import SigningKey
from server.storage.db import Database

log = logging.getLogger(__name__)

#: How long a guard's request waits for the kiosk's acknowledgement.
ACK_TIMEOUT_S = 2.0
#: Close codes the kiosk sees (4000-4999 are the application's).
CLOSE_REPLACED = 4000
CLOSE_SESSION = 4001


#: Told when a kiosk's link comes up or goes down: (device, online) — the alerts hook.
PresenceHook = Callable[[Device, bool], Awaitable[None]]


class Offline(Exception):
    """The kiosk holds no live command socket to any server process."""


class NotAcked(Exception):
    """The command went out but no acknowledgement came back in time."""


@dataclass(frozen=True)
class Ack:
    """A kiosk's answer to one command."""

    id: str
    ok: bool
    error: str
    acked_at: str


@dataclass(eq=False)
class Link:
    """One kiosk's socket to this process."""

    device: Device
    ws: web.WebSocketResponse
    token_expires: float  # unix seconds: the socket closes when its session ends
    id: str = field(default_factory=lambda: uuid.uuid4().hex)


class CommandHub:
    """The sockets, waiters and bus listener of one process (created by ``commands_ctx``)."""

    def __init__(
        self,
        db: Database,
        bus: EventBus,
        key: SigningKey,
        directory: DeviceDirectory,
        clock: Callable[[], datetime],
        publish_to: Callable[..., None],
        on_presence: PresenceHook | None = None,
    ) -> None:
        self._db = db
        self._bus = bus
        self._key = key
        self._directory = directory
        self._clock = clock
        self._publish = publish_to
        self._on_presence = on_presence
        self.process = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.links: dict[str, Link] = {}
        self._waiters: dict[str, asyncio.Future[Ack]] = {}
        self._detaching: set[asyncio.Task[None]] = set()
        self.closing = False

    # -- sockets ----------------------------------------------------------------------------
    async def attach(self, link: Link) -> None:
        """A kiosk connected: it replaces an older socket of the same kiosk here, is recorded
        for the fleet, announced ``kiosk_up``, and handed its commands still pending."""
        device = link.device
        older = self.links.get(device.device_id)
        self.links[device.device_id] = link
        if older is not None:
            await older.ws.close(code=CLOSE_REPLACED, message=b"replaced by a newer connection")
        back = await self._db.run(
            links.link_up, device.device_id, self.process, link.id, self._clock()
        )
        self._publish("kiosk_up", **_where(device), back=back, link=True)
        await self._presence(device, True)
        now_s = int(self._clock().timestamp())
        for signed in await self._db.run(links.pending_commands, device.device_id, now_s):
            await self._send(link, signed)

    async def detached(self, link: Link) -> None:
        """:meth:`detach` in a task of its own: aiohttp cancels the handler of a closed
        connection, and the kiosk must be marked down all the same."""
        task = asyncio.create_task(self.detach(link), name="command-link-detach")
        self._detaching.add(task)
        task.add_done_callback(self._detaching.discard)
        await asyncio.shield(task)

    async def detach(self, link: Link) -> None:
        """A socket closed (or its pings went unanswered): the kiosk is down at once, unless
        it reconnected meanwhile or the server is shutting down."""
        device = link.device
        if self.links.get(device.device_id) is link:
            del self.links[device.device_id]
        if self.closing:
            return
        if await self._db.run(links.link_down, device.device_id, link.id, self._clock()):
            self._publish("kiosk_down", **_where(device), link=True)
            await self._presence(device, False)

    async def _presence(self, device: Device, online: bool) -> None:
        if self._on_presence is None:
            return
        try:
            await self._on_presence(device, online)
        except Exception:  # alerts are a view: the link itself must not fail for them
            log.exception("presence hook failed for %s", device.device_id)

    async def close_all(self) -> None:
        """Shutdown: close every socket (kiosks reconnect to another process) and forget this
        process's links without announcing anyone down."""
        self.closing = True
        await asyncio.gather(*self._detaching, return_exceptions=True)
        # All at once: 10,000 sockets closed one after another outlast a shutdown's grace.
        await asyncio.gather(
            *(
                link.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")
                for link in list(self.links.values())
            ),
            return_exceptions=True,
        )
        with contextlib.suppress(Exception):
            await self._db.run(links.drop_links, self.process)

    # -- commands ---------------------------------------------------------------------------
    def sign(self, device: Device, command: str, args: dict[str, Any]) -> SignedCommand:
        """A command for ``device``, valid for :data:`~core.commands.TTL_S` seconds."""
        issued = int(self._clock().timestamp())
        unsigned = SignedCommand(
            uuid.uuid4().hex, device.device_id, command, args, issued, issued + TTL_S
        )
        signature = self._key.sign(command_message(unsigned)).hex()
        return msgspec.structs.replace(unsigned, signature=signature)

    async def send(
        self, device: Device, command: str, args: dict[str, Any], by: str, reason: str | None
    ) -> Ack:
        """Sign, record and deliver a command; the kiosk's acknowledgement. :class:`Offline`
        when the kiosk holds no socket anywhere, :class:`NotAcked` after
        :data:`ACK_TIMEOUT_S` without an answer."""
        local = self.links.get(device.device_id)
        if local is None and not await self._db.run(
            links.is_linked, device.device_id, self._clock()
        ):
            raise Offline(device.device_id)
        cmd = self.sign(device, command, args)
        await self._db.run(links.record_command, cmd, by, reason)
        waiter: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        self._waiters[cmd.id] = waiter
        try:
            signed = msgspec.to_builtins(cmd)
            if local is not None:
                await self._send(local, signed)
            else:
                self._publish("command", **_where(device), command=command, by=by, signed=signed)
            return await asyncio.wait_for(waiter, ACK_TIMEOUT_S)
        except TimeoutError:
            raise NotAcked(cmd.id) from None
        finally:
            self._waiters.pop(cmd.id, None)

    async def _send(self, link: Link, signed: dict[str, Any]) -> None:
        try:
            await link.ws.send_json({"type": "command", "signed": signed})
        except (ConnectionError, RuntimeError) as exc:  # closing: the ack will not come
            log.info("command to %s not sent: %s", link.device.device_id, exc)

    async def on_message(self, link: Link, data: Any) -> None:
        """A message from a kiosk: an acknowledgement ``{type: ack, id, ok, error?}``."""
        if not isinstance(data, dict) or data.get("type") != "ack":
            return
        command_id, ok, error = data.get("id"), data.get("ok"), data.get("error") or ""
        if not isinstance(command_id, str) or not isinstance(ok, bool):
            return
        error = str(error)[:200]
        acked_at = links.iso_ms(self._clock())
        known = await self._db.run(
            links.record_ack, command_id, link.device.device_id, ok, error, acked_at
        )
        if known is None:
            return  # not this kiosk's command, or acknowledged already
        name, by = known
        self._publish(
            "command_ack",
            **_where(link.device),
            id=command_id,
            command=name,
            by=by,
            ok=ok,
            error=error,
            acked_at=acked_at,
        )
        self._resolve(Ack(command_id, ok, error, acked_at))

    def _resolve(self, ack: Ack) -> None:
        waiter = self._waiters.get(ack.id)
        if waiter is not None and not waiter.done():
            waiter.set_result(ack)

    # -- background -------------------------------------------------------------------------
    async def listen(self) -> None:
        """Pass on commands for the kiosks linked here; answer waiters from other
        processes' acknowledgements. Until the bus ends."""
        async with self._bus.subscribe() as sub:
            async for event in sub:
                data = event.data
                if event.kind == "command":
                    link = self.links.get(str(data.get("device_id")))
                    signed = data.get("signed")
                    if link is not None and isinstance(signed, dict):
                        await self._send(link, signed)
                elif event.kind == "command_ack" and isinstance(data.get("id"), str):
                    self._resolve(
                        Ack(
                            data["id"],
                            bool(data.get("ok")),
                            str(data.get("error", "")),
                            str(data.get("acked_at", "")),
                        )
                    )

    async def keep(self) -> None:
        """Every :data:`~server.commands.links.REFRESH_S`: refresh this process's links,
        sweep dead processes' ones, and close the sockets whose session ended or whose
        kiosk was revoked or quarantined. Until cancelled."""
        while True:
            await asyncio.sleep(links.REFRESH_S)
            try:
                await self._db.run(links.refresh_links, self.process, self._clock())
                await self._close_ended()
            except Exception as exc:
                log.warning("command links refresh failed: %s", exc)

    async def _close_ended(self) -> None:
        now = time.time()
        for link in list(self.links.values()):
            state = await self._directory.get(link.device.device_id)
            if link.token_expires <= now or state is None or state.status != "active":
                await link.ws.close(code=CLOSE_SESSION, message=b"session ended")


def _where(device: Device) -> dict[str, str]:
    return {"device_id": device.device_id, "site": device.site, "gate": device.gate}


def publisher(app: web.Application) -> Callable[..., None]:
    """``publish`` bound to ``app``."""

    def send(kind: str, **data: Any) -> None:
        publish(app, kind, **data)

    return send
