"""Signed kiosk commands: the one definition of their bytes, shared by server and kiosk.

The server signs each command with its Ed25519 key (the key kiosks already hold as
``bundle.server_key`` for snapshots and passes) over the canonical JSON of
``{id, device_id, command, args, issued_at, expires_at}``, prefixed with a purpose tag so a
signature made for a snapshot or a pass can never pass for a command, or the reverse.

A kiosk executes a command only when :func:`refusal` finds nothing wrong: the signature
verifies, the command is addressed to this kiosk, it has not expired (``expires_at`` is a few
seconds after ``issued_at``: a kiosk that was offline never acts on a stale order) and its id
was not seen before (a replay within the lifetime is refused by the kiosk's memory of ids).
"""

from __future__ import annotations

import json
from collections.abc import Container
from typing import Any, Literal

import msgspec

from core.signing import signature_ok

COMMAND_TAG = "siheyi-command-v1"
#: What a kiosk can be told to do.
CommandName = Literal["gate_open", "config_reload", "speak_test"]
COMMAND_NAMES: tuple[str, ...] = ("gate_open", "config_reload", "speak_test")
#: Seconds a command stays valid after it was issued.
TTL_S = 10


class SignedCommand(msgspec.Struct, frozen=True):
    """A command as it travels (WebSocket message ``{"type": "command", ...}``, heartbeat
    answer's ``commands`` list): the signed fields and the hex Ed25519 signature."""

    id: str
    device_id: str
    command: str
    args: dict[str, Any]
    issued_at: int
    expires_at: int
    signature: str = ""


def command_message(cmd: SignedCommand) -> bytes:
    """The exact bytes signed: tag, newline, canonical JSON (sorted keys, no spaces)."""
    fields = {
        "id": cmd.id,
        "device_id": cmd.device_id,
        "command": cmd.command,
        "args": cmd.args,
        "issued_at": cmd.issued_at,
        "expires_at": cmd.expires_at,
    }
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"{COMMAND_TAG}\n{canonical}".encode()


def refusal(
    cmd: SignedCommand, server_key_hex: str, device_id: str, now: float, seen: Container[str]
) -> str:
    """Why this kiosk must not execute ``cmd`` ("" when it may): ``bad_signature``,
    ``wrong_device``, ``expired``, ``replay`` or ``unknown_command``. ``now`` is the
    kiosk's best estimate of the server's clock (unix seconds)."""
    if not signature_ok(server_key_hex, cmd.signature, command_message(cmd)):
        return "bad_signature"
    if cmd.device_id != device_id:
        return "wrong_device"
    if now > cmd.expires_at or cmd.expires_at - cmd.issued_at > 6 * TTL_S:
        return "expired"
    if cmd.id in seen:
        return "replay"
    if cmd.command not in COMMAND_NAMES:
        return "unknown_command"
    return ""
