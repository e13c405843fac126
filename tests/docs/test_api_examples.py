"""Every request example in docs/api.md, sent to a live server (issue 14, part 1).

An integrator writes a client from docs/api.md alone, so each example must be a request the
server takes, answered with the status and the keys the doc shows. Examples are the fenced
blocks headed ```` ```json request METHOD PATH -> STATUS key… ````; each is sent as it
stands, after only the fields that must be live are replaced: a session's nonce, time and
signature (signed by a provisioned kiosk), an enrolment's code and key. The answer's keys must
be exactly those listed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.signing import enrol_message, session_message
from provisioning.registry import DeviceBundle, add_device
from server.accounts.passwords import hash_password
from server.app import create_app
from server.config import ServerConfig
from server.fleet.admin import create_admin
from server.fleet.sessions import mint_token
from server.storage.db import connect, transaction
from siheyi.cli import local_fleet

API_MD = Path(__file__).resolve().parents[2] / "docs" / "api.md"
HEADING = re.compile(
    r"^```json request (?P<method>[A-Z]+) (?P<path>\S+) -> (?P<status>\d{3})(?P<keys>.*)$"
)
ADMIN, PASSWORD = "ops", "correct horse battery"
#: Routes that take no token: the credential is in the body.
OPEN = ("/v1/enrol", "/v1/session/challenge", "/v1/session", "/v1/admin/login", "/v1/login")

Client = TestClient[web.Request, web.Application]


@dataclass(frozen=True)
class Example:
    """One marked request example of the doc."""

    line: int
    method: str
    path: str
    status: int
    keys: frozenset[str]
    body: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.method} {self.path} (line {self.line})"


def examples() -> list[Example]:
    """The marked blocks of docs/api.md, in order."""
    lines = API_MD.read_text(encoding="utf-8").splitlines()
    found = []
    for number, line in enumerate(lines):
        head = HEADING.match(line)
        if head is None:
            continue
        end = lines.index("```", number + 1)
        body = json.loads("\n".join(lines[number + 1 : end]))
        keys = frozenset(head["keys"].split())
        status = int(head["status"])
        found.append(Example(number + 1, head["method"], head["path"], status, keys, body))
    return found


EXAMPLES = examples()


def test_the_doc_has_request_examples_for_the_routes_integrators_write() -> None:
    routes = {e.path for e in EXAMPLES}
    assert routes >= {
        "/v1/enrol",
        "/v1/session/challenge",
        "/v1/session",
        "/v1/verify",
        "/v1/audit",
        "/v1/heartbeat",
        "/v1/passes/claim",
        "/v1/admin/login",
        "/v1/admin/devices",
        "/v1/admin/config",
        "/v1/admin/sites",
    }


def test_no_concrete_request_example_is_left_unmarked() -> None:
    """A ``Request: `{…}``` span that is real JSON must be a marked block, so it is tested;
    schematic ones (``{"device_id", "nonce", …}``) are not JSON and stay prose."""
    text = API_MD.read_text(encoding="utf-8")
    for span in re.findall(r"Request:\s*`(\{[^`]*\})`", text):
        with pytest.raises(ValueError):
            json.loads(span)


@dataclass
class Fleet:
    client: Client
    device: DeviceBundle
    db: Path | str

    def device_auth(self) -> dict[str, str]:
        with connect(self.db) as conn:
            return {"Authorization": f"Bearer {mint_token(conn, self.device.device_id)}"}

    async def admin_auth(self) -> dict[str, str]:
        resp = await self.client.post(
            "/v1/admin/login", json={"username": ADMIN, "password": PASSWORD}
        )
        assert resp.status == 200, await resp.text()
        return {"Authorization": f"Bearer {(await resp.json())['token']}"}


@pytest.fixture
async def fleet(aiohttp_client: Any, any_database: Path | str) -> Fleet:
    device = add_device(
        local_fleet(None, any_database), "SN-0001", "site-a", "gate-1", server_url="http://test"
    )
    with connect(any_database) as conn, transaction(conn):
        create_admin(conn, ADMIN, hash_password(PASSWORD), "2026-01-01T00:00:00+00:00")
    client = await aiohttp_client(create_app(ServerConfig.default(database=any_database)))
    return Fleet(client, device, any_database)


async def live_session(fleet: Fleet, body: dict[str, Any]) -> dict[str, Any]:
    """The example's session request, signed now by the provisioned kiosk."""
    device_id = fleet.device.device_id
    resp = await fleet.client.post("/v1/session/challenge", json={"device_id": device_id})
    nonce = (await resp.json())["nonce"]
    now = int(datetime.now(UTC).timestamp())
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(fleet.device.private_key))
    signature = key.sign(session_message(device_id, nonce, now)).hex()
    return {**body, "device_id": device_id, "nonce": nonce, "time": now, "signature": signature}


async def live_enrolment(fleet: Fleet, body: dict[str, Any]) -> dict[str, Any]:
    """The example's serial registered and given a code; a new key signs the enrolment."""
    auth = await fleet.admin_auth()
    serial = body["serial"]
    registered = {"devices": [{"serial": serial, "site": "site-a"}]}
    assert (await fleet.client.post("/v1/admin/devices", json=registered, headers=auth)).ok
    resp = await fleet.client.post(f"/v1/admin/devices/{serial}/enrol-code", headers=auth)
    code = (await resp.json())["code"]
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes_raw().hex()
    signed = enrol_message(serial, code.replace("-", "").upper(), public)
    return {**body, "code": code, "public_key": public, "signature": key.sign(signed).hex()}


async def headers_for(fleet: Fleet, path: str) -> dict[str, str]:
    if path in OPEN:
        return {}
    if path.startswith("/v1/admin/"):
        return await fleet.admin_auth()
    return fleet.device_auth()


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.id for e in EXAMPLES])
async def test_the_example_is_answered_as_documented(fleet: Fleet, example: Example) -> None:
    body = example.body
    if example.path == "/v1/session":
        body = await live_session(fleet, body)
    elif example.path == "/v1/enrol":
        body = await live_enrolment(fleet, body)
    headers = await headers_for(fleet, example.path)
    resp = await fleet.client.request(example.method, example.path, json=body, headers=headers)
    answer = await resp.json()
    assert resp.status == example.status, answer
    assert set(answer) == example.keys
    if example.path == "/v1/audit":
        assert answer["chain_breaks"] == []  # the doc's hash is the event's real one
