"""HTTP client for the central server: the only module of the agent that knows URLs.

Every request carries the device credential from the bundle; errors are mapped to two kinds the
agent cares about: the server could not be reached in time (`ServerUnavailable`, decide
offline and retry later) and the server answered but refused (`ServerRejected`).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import aiohttp
import aiohttp.abc

from device.errors import KioskError

log = logging.getLogger(__name__)


class ServerError(KioskError):
    """The server could not give an answer."""


class ServerUnavailable(ServerError, ConnectionError):
    """The server was unreachable, too slow or failing (5xx)."""


class ServerRejected(ServerError, ValueError):
    """The server answered with a 4xx refusal."""

    def __init__(self, status: int, error: str, detail: str = "") -> None:
        super().__init__(f"server refused ({status} {error}): {detail}")
        self.status = status
        self.error = error


class ServerClient:
    """A long-lived aiohttp session bound to one device identity."""

    def __init__(
        self,
        base_url: str,
        device_id: str,
        secret: str,
        *,
        resolver: aiohttp.abc.AbstractResolver | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._resolver = resolver
        self._headers = {"Authorization": f"Bearer {device_id}.{secret}"}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ServerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=8, ttl_dns_cache=300, resolver=self._resolver)
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                json_serialize=lambda o: json.dumps(o, ensure_ascii=False),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, path: str, body: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """POST JSON and return the decoded object; every failure becomes a ServerError."""
        session = self._get_session()
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        try:
            async with session.post(self._base + path, json=body, timeout=timeout) as resp:
                text = await resp.text()
                if resp.status >= 500:
                    raise ServerUnavailable(f"{path}: server error {resp.status}")
                try:
                    data = json.loads(text)
                except ValueError as exc:
                    raise ServerUnavailable(f"{path}: response is not JSON") from exc
                if not isinstance(data, dict):
                    raise ServerUnavailable(f"{path}: response is not a JSON object")
                if resp.status >= 400:
                    raise ServerRejected(
                        resp.status, str(data.get("error", "")), str(data.get("detail", ""))
                    )
                return data
        except TimeoutError as exc:
            raise ServerUnavailable(f"{path}: no answer within {timeout_s:.2f} s") from exc
        except aiohttp.ClientError as exc:
            raise ServerUnavailable(f"{path}: {type(exc).__name__}: {exc}") from exc
        except OSError as exc:
            raise ServerUnavailable(f"{path}: {exc}") from exc

    async def health(self, timeout_s: float = 2.0) -> dict[str, Any]:
        """GET /healthz: is the server there at all (the circuit breaker's probe)."""
        session = self._get_session()
        try:
            async with session.get(
                self._base + "/healthz", timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as resp:
                if resp.status != 200:
                    raise ServerUnavailable(f"/healthz: status {resp.status}")
                data = await resp.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            raise ServerUnavailable(f"/healthz: {type(exc).__name__}: {exc}") from exc
        return data if isinstance(data, dict) else {}

    async def get_json(self, path: str, timeout_s: float) -> dict[str, Any]:
        """GET a JSON object from a device endpoint (the snapshot)."""
        session = self._get_session()
        try:
            async with session.get(
                self._base + path, timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as resp:
                if resp.status >= 500:
                    raise ServerUnavailable(f"{path}: server error {resp.status}")
                data = await resp.json(content_type=None)
                if resp.status >= 400:
                    detail = data if isinstance(data, dict) else {}
                    raise ServerRejected(
                        resp.status, str(detail.get("error", "")), str(detail.get("detail", ""))
                    )
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            raise ServerUnavailable(f"{path}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(data, dict):
            raise ServerUnavailable(f"{path}: response is not a JSON object")
        return data

    async def verify(
        self,
        tap_id: str,
        kind: str,
        id_number: str,
        timeout_s: float,
        *,
        card_type: str = "resident",
    ) -> dict[str, Any]:
        credential = {"kind": kind, "id_number": id_number}
        if card_type != "resident":
            credential["card_type"] = card_type
        body = {"tap_id": tap_id, "credential": credential}
        return await self.post("/v1/verify", body, timeout_s)

    async def upload(self, events: list[dict[str, Any]], timeout_s: float = 10.0) -> dict[str, Any]:
        return await self.post("/v1/audit", {"events": events}, timeout_s)

    async def heartbeat(self, status: dict[str, Any], timeout_s: float = 5.0) -> dict[str, Any]:
        return await self.post("/v1/heartbeat", status, timeout_s)
