"""The way to the server: reachable, TLS pin, session, and the clock against the server's."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from device.link.identity import new_key, private_hex
from provisioning.registry import add_device, write_bundle
from server.app import create_app
from server.config import ServerConfig
from server.http.tls import server_context
from siheyi.cli import local_fleet
from tests.device.test_identity import _certificates
from tests.doctor.conftest import Kiosk


def _rewrite_bundle(kiosk: Kiosk, **changes: str) -> None:
    path = Path(kiosk.config.bundle)
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_server_that_is_down_fails_and_the_rest_is_not_asked(
    kiosk: Kiosk, closed_port: int
) -> None:
    _rewrite_bundle(kiosk, server_url=f"http://127.0.0.1:{closed_port}")
    report = await kiosk.run()
    server = report.by_name("server")
    assert server.status == "fail" and f"127.0.0.1:{closed_port}" in server.detail
    assert "systemctl status siheyi-server" in server.fix
    for name in ("tls", "session"):
        check = report.by_name(name)
        assert check.status == "warn" and check.detail.startswith("not checked")
    # NTP is synchronised: without the server's time that is still ok.
    assert report.status("clock") == "ok"


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port that accepts connections and never answers (a wedged server, a firewall)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield int(s.getsockname()[1])


async def test_a_server_that_never_answers_fails_within_the_time_limit(
    kiosk: Kiosk, silent_listener: int
) -> None:
    _rewrite_bundle(kiosk, server_url=f"http://127.0.0.1:{silent_listener}")
    report = await kiosk.run(timeout_s=0.3)
    check = report.by_name("server")
    assert check.status == "fail" and "/healthz" in check.detail
    assert report.status("session") == "warn"


async def test_the_server_url_of_the_config_overrides_the_bundle(
    kiosk: Kiosk, closed_port: int
) -> None:
    config = kiosk.configured(server_url=f"http://127.0.0.1:{closed_port}")
    assert (await kiosk.run(config)).status("server") == "fail"


async def test_a_session_refused_names_the_fix(kiosk: Kiosk) -> None:
    _rewrite_bundle(kiosk, private_key=private_hex(new_key()))
    check = (await kiosk.run()).by_name("session")
    assert check.status == "fail" and "bad_signature" in check.detail
    assert "--rekey" in check.fix


@pytest.fixture
async def https(tmp_path: Path) -> AsyncIterator[tuple[str, str, str]]:
    """The server on https://localhost with a certificate from the "fleet" CA; yields
    (url, fleet CA PEM, another CA PEM). The kiosk's bundle is provisioned for it."""
    ca_pem, cert, key = _certificates(tmp_path, "fleet")
    other_ca, _, _ = _certificates(tmp_path, "other")
    db = tmp_path / "tls.db"
    runner = web.AppRunner(create_app(ServerConfig.default(database=db)))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context(cert, key))
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"https://localhost:{port}"
    issued = add_device(local_fleet(None, db), "SN-TLS-1", "site-a", server_url=url)
    write_bundle(issued, tmp_path / "bundle.json")
    try:
        yield url, ca_pem, other_ca
    finally:
        await runner.cleanup()


async def test_tls_with_the_pinned_ca_passes_and_a_mismatch_fails(
    kiosk: Kiosk, https: tuple[str, str, str]
) -> None:
    _url, fleet_ca, other_ca = https
    _rewrite_bundle(kiosk, tls_ca=fleet_ca)
    pinned = await kiosk.run()
    assert pinned.by_name("tls").detail.endswith("chains to the pinned fleet CA")
    assert pinned.status("tls") == "ok" and pinned.status("session") == "ok"
    _rewrite_bundle(kiosk, tls_ca=other_ca)
    mismatch = await kiosk.run()
    tls = mismatch.by_name("tls")
    assert tls.status == "fail" and "not trusted by the pinned fleet CA" in tls.detail
    assert "--tls-ca" in tls.fix
    # Reachable all the same: a wrong pin is not reported as a network outage.
    assert mismatch.status("server") == "ok"
    assert mismatch.status("session") == "fail"


async def test_https_without_a_pinned_ca_is_checked_against_the_system(
    kiosk: Kiosk, https: tuple[str, str, str]
) -> None:
    check = (await kiosk.run()).by_name("tls")
    assert check.status == "fail" and "not trusted by the system's CAs" in check.detail


async def test_an_unsynchronised_clock(kiosk: Kiosk, closed_port: int) -> None:
    unsynced = kiosk.probes(ntp=lambda: False)
    agrees = (await kiosk.run(probes=unsynced)).by_name("clock")
    assert agrees.status == "warn" and "server's clock agrees" in agrees.detail
    assert "timedatectl set-ntp true" in agrees.fix
    _rewrite_bundle(kiosk, server_url=f"http://127.0.0.1:{closed_port}")
    alone = (await kiosk.run(probes=unsynced)).by_name("clock")
    assert alone.status == "fail" and "server's time is unavailable" in alone.detail


async def test_a_clock_far_from_the_servers_fails_even_with_ntp(kiosk: Kiosk) -> None:
    import time

    ahead = kiosk.probes(wall_clock=lambda: time.time() + 600)
    check = (await kiosk.run(probes=ahead)).by_name("clock")
    assert check.status == "fail" and "differs from the server's by -60" in check.detail


async def test_unknown_ntp_state_warns(kiosk: Kiosk) -> None:
    check = (await kiosk.run(probes=kiosk.probes(ntp=lambda: None))).by_name("clock")
    assert check.status == "warn" and "NTP state unknown" in check.detail
