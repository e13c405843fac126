"""The device bundle: a kiosk's identity, its private key and its site's settings, as one
JSON file (docs/identity.md).

Written by ``kiosk provision add`` and ``kiosk device enrol`` (mode 0600), read by the agent.
``private_key`` is the kiosk's own Ed25519 key (64 hex) and never leaves the kiosk;
``site_key`` is the pseudonym key of the kiosk's own site (each site has its own) and keys the
pseudonyms of the offline cache, journal, site snapshot and passes; it authenticates nothing.
Bundles written before the rename carry it as ``fleet_key``: that name is still read, and is
still written beside ``site_key`` so that kiosks running an older release can read new bundles.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import msgspec

from core.errors import BundleError


class Bundle(msgspec.Struct, frozen=True, kw_only=True):
    """One kiosk's bundle. Unknown keys are ignored, so a newer provisioning tool may add some."""

    device_id: str
    serial: str
    site: str
    server_url: str
    site_key: str
    private_key: str
    gate: str = ""
    #: The server's Ed25519 public key (hex): verifies site snapshots and passes.
    server_key: str = ""
    #: This kiosk's public key (hex), for reference.
    public_key: str = ""
    #: PEM: the only CA(s) trusted for an https ``server_url`` ("" = the system's CAs).
    tls_ca: str = ""

    def __repr__(self) -> str:
        return f"Bundle(device_id={self.device_id!r}, serial={self.serial!r}, site={self.site!r})"

    @property
    def site_key_bytes(self) -> bytes:
        """The site's pseudonym key."""
        return bytes.fromhex(self.site_key)


def decode_bundle(data: bytes | str) -> Bundle:
    """Parse and check a bundle's JSON text; :class:`BundleError` names what is wrong."""
    try:
        raw = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise BundleError(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise BundleError("must be a JSON object")
    if "private_key" not in raw and "secret" in raw:
        raise BundleError(
            "this bundle holds a shared secret from before per-kiosk keys;"
            " enrol the kiosk again (kiosk device enrol)"
        )
    if "site_key" not in raw and "fleet_key" in raw:
        raw["site_key"] = raw["fleet_key"]
    try:
        bundle = msgspec.convert(raw, Bundle)
    except msgspec.ValidationError as exc:
        raise BundleError(_validation_message(str(exc))) from None
    _check_hex(bundle.site_key, "site_key", None)
    _check_hex(bundle.private_key, "private_key", 32)
    return bundle


def _validation_message(text: str) -> str:
    # msgspec: "Object missing required field `x`" / "Expected `str`, got `int` - at `$.y`"
    if text.startswith("Object missing required field"):
        return "lacks " + repr(text.rsplit("`", 2)[-2])
    return text.replace("$.", "")


def _check_hex(value: str, name: str, length: int | None) -> None:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = None
    if raw is None or (length is not None and len(raw) != length):
        size = f"{2 * length} hex digits" if length else "hex"
        raise BundleError(f"{name!r} must be {size}")


def bundle_document(bundle: Bundle) -> dict[str, Any]:
    """The bundle file's content (``fleet_key`` repeated for older kiosk releases)."""
    doc: dict[str, Any] = msgspec.to_builtins(bundle)
    doc["fleet_key"] = bundle.site_key
    return doc


def bundle_text(bundle: Bundle | Mapping[str, Any]) -> str:
    """The bundle file's text (stable key order, UTF-8, trailing newline). A mapping is an
    existing bundle's content being rewritten with the keys it already has."""
    doc = bundle_document(bundle) if isinstance(bundle, Bundle) else dict(bundle)
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
