"""HTTPS for ``kiosk server run --tls-cert FILE --tls-key FILE``.

Kiosks pin the fleet CA from their bundle (``tls_ca``) with hostname checking on
(device/client.py), so the certificate must name the host in the kiosks' ``server_url``.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from server.errors import ConfigError


def server_context(cert: str | Path, key: str | Path) -> ssl.SSLContext:
    """A TLS ≥ 1.2 server context with the certificate chain and its key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"--tls-cert {cert} / --tls-key {key}: {reason}") from exc
    return context
