"""Kiosk keys: both sides sign/verify the same bytes; keys stay hidden; TLS pinning."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import uuid
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from core import signing
from device.config import load_bundle
from device.errors import ServerUnavailable
from device.link import identity as kiosk
from device.link.client import ServerClient
from device.link.identity import DeviceIdentity
from provisioning.registry import add_device
from server.app import create_app
from server.config import ServerConfig
from server.http.tls import server_context
from siheyi.cli import local_fleet


def test_signed_messages_are_the_documented_bytes() -> None:
    """docs/identity.md fixes these bytes: a kiosk image and a server of another version
    must still agree, so a change here is a protocol change."""
    assert signing.enrol_message("SN", "ABCDE", "ab" * 32) == (
        b"siheyi-enrol-v1\nSN\nABCDE\n" + b"ab" * 32
    )
    assert signing.session_message("k-1", "n" * 3, 1700000000, "") == (
        b"siheyi-session-v1\nk-1\nnnn\n1700000000\n"
    )
    assert signing.session_message("k-1", "n", 1, "cd" * 32).endswith(b"\n1\n" + b"cd" * 32)
    key = kiosk.new_key()
    ident = DeviceIdentity("k-1", key)
    message = signing.session_message("k-1", "n" * 43, 1, "")
    assert signing.signature_ok(ident.public_key_hex, ident.sign(message), message)
    assert not signing.signature_ok(ident.public_key_hex, ident.sign(message), message + b"x")
    assert not signing.signature_ok("zz", "00", message)


def test_keys_stay_out_of_repr(tmp_path: Path) -> None:
    bundle = add_device(local_fleet(None, tmp_path / "s.db"), "SN-1", "site-a")
    ident = DeviceIdentity.from_bundle(bundle.device_id, bundle.private_key, None)
    assert bundle.private_key not in repr(ident) and bundle.private_key not in repr(bundle)
    path = tmp_path / "b.json"
    from provisioning.registry import write_bundle

    write_bundle(bundle, path)
    assert bundle.private_key not in repr(load_bundle(path))


def test_pre_issue_6_bundle_is_refused_clearly(tmp_path: Path) -> None:
    from device.errors import ConfigError

    path = tmp_path / "old.json"
    path.write_text('{"device_id": "k-1", "secret": "s", "serial": "S", "site": "a",'
                    ' "server_url": "http://x", "fleet_key": "00"}')  # fmt: skip
    with pytest.raises(ConfigError, match="enrol the kiosk again"):
        load_bundle(path)


def _certificates(tmp_path: Path, name: str) -> tuple[str, Path, Path]:
    """A CA (PEM) and a server certificate for 127.0.0.1/localhost signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} fleet CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca.public_bytes(serialization.Encoding.PEM).decode(), cert_path, key_path


async def test_https_with_the_pinned_fleet_ca(tmp_path: Path) -> None:
    ca_pem, cert, key = _certificates(tmp_path, "fleet")
    other_ca, _, _ = _certificates(tmp_path, "other")
    db = tmp_path / "s.db"
    runner = web.AppRunner(create_app(ServerConfig.default(database=db)))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context(cert, key))
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"https://localhost:{port}"
    try:
        bundle = add_device(local_fleet(None, db), "SN-1", "site-a", server_url=url)
        ident = DeviceIdentity.from_bundle(bundle.device_id, bundle.private_key, None)
        async with ServerClient(url, ident, tls_ca=ca_pem) as client:
            answer = await client.verify(
                f"t-{uuid.uuid4().hex}", "id_card", "11010519491231002X", 5
            )
            assert answer["site"] == "site-a"
        async with ServerClient(url, ident, tls_ca=other_ca) as stranger:
            with pytest.raises(ServerUnavailable, match="certificate"):
                await stranger.health()
        async with ServerClient(url, ident) as system_trust:  # no pin: system CAs only
            with pytest.raises(ServerUnavailable):
                await system_trust.health()
    finally:
        await runner.cleanup()


def test_tls_context_checks_hostnames(tmp_path: Path) -> None:
    from device.link.client import tls_context

    ca_pem = _certificates(tmp_path, "h")[0]
    context = tls_context(ca_pem)
    assert context is not None and context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert tls_context("") is None
