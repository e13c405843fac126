"""Signed offline passes on the kiosk: core.passes.verify_pass against docs/passes.md.

Passes are built here from the documented byte format (independently of the server code), so
these tests pin the format itself; tests/server/test_issue_pass.py covers the real issuer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from core.idnumbers import pseudonym
from core.passes import PassCheck, ReplayGuard, is_pass, verify_pass

NOW = 1_800_000_000
FLEET_KEY = bytes(range(32))
NUMBER = "11010519491231002X"
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(100, 132)))
KEY_HEX = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def payload(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "v": 1,
        "pid": pseudonym(FLEET_KEY, NUMBER),
        "m": "1101**********002X",
        "o": "pass",
        "iat": NOW - 30,
        "exp": NOW - 30 + 300,
        "n": "0123456789abcdef",
        "s": "",
    }
    doc.update(changes)
    return doc


def make(doc: dict[str, Any], key: Ed25519PrivateKey = KEY) -> str:
    body = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    signed = "SHY1." + b64(body.encode("utf-8"))
    return signed + "." + b64(key.sign(signed.encode("ascii")))


def check(
    text: str,
    *,
    now: float = NOW,
    trusted: bool = True,
    site: str = "site-a",
    guard: ReplayGuard | None = None,
    key_hex: str = KEY_HEX,
) -> PassCheck:
    return verify_pass(
        text,
        key_hex,
        now=now,
        clock_trusted=trusted,
        site=site,
        seen=guard if guard is not None else ReplayGuard(),
    )


def test_valid_pass() -> None:
    result = check(make(payload()))
    assert result.ok and result.reason == "ok"
    assert result.pseudonym == pseudonym(FLEET_KEY, NUMBER)
    assert result.pseudonym == hmac.new(FLEET_KEY, NUMBER.encode(), hashlib.sha256).hexdigest()
    assert result.masked_id == "1101**********002X"
    assert result.outcome == "pass"
    assert result.expires_at == NOW + 270


def test_is_pass_is_a_prefix_test() -> None:
    assert is_pass("SHY1.anything")
    assert not is_pass("shy1.x") and not is_pass("HC:SHY1.") and not is_pass("")


def test_documented_example_bytes() -> None:
    """The worked example of docs/passes.md, byte for byte."""
    doc = payload(iat=1_800_000_000, exp=1_800_000_300, s="site-a")
    body = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    assert body == (
        '{"exp":1800000300,"iat":1800000000,"m":"1101**********002X","n":"0123456789abcdef",'
        f'"o":"pass","pid":"{doc["pid"]}","s":"site-a","v":1}}'
    )
    text = make(doc)
    payload_b64, signature_b64 = text[5:].split(".")
    assert base64.urlsafe_b64decode(payload_b64 + "==") == body.encode()
    assert len(signature_b64) == 86 and "=" not in text
    assert check(text, now=1_800_000_100).ok


def test_tampered_payload() -> None:
    text = make(payload())
    payload_b64, signature_b64 = text[5:].split(".")
    forged = json.dumps(payload(exp=NOW + 900), sort_keys=True, separators=(",", ":"))
    assert check(f"SHY1.{b64(forged.encode())}.{signature_b64}").reason == "bad_signature"
    # One flipped character anywhere in the payload part.
    i = len(payload_b64) // 2
    flipped = payload_b64[:i] + ("A" if payload_b64[i] != "A" else "B") + payload_b64[i + 1 :]
    bad = check(f"SHY1.{flipped}.{signature_b64}")
    assert not bad.ok and bad.reason in ("bad_signature", "bad_base64")
    assert bad.pseudonym == "" and bad.masked_id == ""  # nothing from an unsigned payload


def test_tampered_signature() -> None:
    text = make(payload())
    head, signature_b64 = text.rsplit(".", 1)
    raw = bytearray(base64.urlsafe_b64decode(signature_b64 + "=="))
    raw[10] ^= 0x01
    assert check(f"{head}.{b64(bytes(raw))}").reason == "bad_signature"


def test_wrong_key() -> None:
    assert check(make(payload(), OTHER_KEY)).reason == "bad_signature"
    assert check(make(payload()), key_hex="zz").reason == "bad_key"
    assert check(make(payload()), key_hex=KEY_HEX[:-2]).reason == "bad_key"


def test_expired_boundary() -> None:
    doc = payload(iat=NOW - 300, exp=NOW)
    assert check(make(doc), now=NOW).ok  # exp == now: still valid
    late = check(make(doc), now=NOW + 1)
    assert (late.ok, late.reason) == (False, "expired")
    assert late.masked_id == "1101**********002X"  # signed: the audit may say whose


def test_future_iat() -> None:
    assert check(make(payload(iat=NOW + 60, exp=NOW + 360))).ok  # 60 s of skew tolerated
    assert check(make(payload(iat=NOW + 61, exp=NOW + 361))).reason == "not_yet_valid"


def test_too_long_validity() -> None:
    assert check(make(payload(iat=NOW - 10, exp=NOW - 10 + 900))).ok
    assert check(make(payload(iat=NOW - 10, exp=NOW - 10 + 901))).reason == "validity_too_long"
    assert check(make(payload(iat=NOW, exp=NOW - 1))).reason == "bad_payload"


def test_replay_is_refused_at_the_same_kiosk() -> None:
    guard = ReplayGuard()
    text = make(payload())
    assert check(text, guard=guard).ok
    again = check(text, guard=guard, now=NOW + 5)
    assert (again.ok, again.reason) == (False, "replayed")
    # Another kiosk (its own guard) accepts it: documented, bounded by the validity.
    assert check(text, guard=ReplayGuard()).ok
    # A refused pass does not use the nonce up.
    other = make(payload(n="fedcba9876543210", s="site-b"))
    assert check(other, guard=guard).reason == "site_mismatch"
    assert check(other, guard=guard, site="site-b").ok


def test_site_mismatch() -> None:
    text = make(payload(s="east-gate"))
    assert check(text, site="west-gate").reason == "site_mismatch"
    assert check(text, site="east-gate").ok
    assert check(make(payload(s="")), site="anywhere").ok  # no site: valid everywhere


def test_untrusted_clock() -> None:
    result = check(make(payload()), trusted=False)
    assert (result.ok, result.reason) == (False, "clock_untrusted")
    assert result.pseudonym  # authentic, only undecidable


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("SHY1.", "bad_format"),
        ("SHY2.abc.def", "bad_format"),
        ("SHY1.abc", "bad_format"),
        ("SHY1.a.b.c", "bad_format"),
        ("SHY1." + "A" * 3000, "bad_format"),
        ("SHY1.ab=c." + "A" * 86, "bad_base64"),
        ("SHY1.abcde." + "A" * 86, "bad_base64"),  # 5 chars: impossible length
        ("SHY1.ab+c." + "A" * 86, "bad_base64"),  # standard, not url-safe alphabet
        ("SHY1.abc." + "A" * 85 + "B", "bad_base64"),  # non-zero padding bits
    ],
)
def test_bad_format_and_base64(text: str, reason: str) -> None:
    assert check(text).reason == reason


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        (payload(v=2), "wrong_version"),
        (payload(v=True), "wrong_version"),
        ({"pid": "x"}, "bad_payload"),
        (payload(pid="ABC"), "bad_payload"),
        (payload(n="short"), "bad_payload"),
        (payload(o="open_sesame"), "bad_payload"),
        (payload(iat="1800000000"), "bad_payload"),
        (payload(exp=True), "bad_payload"),
        (payload(s=None), "bad_payload"),
        ([1, 2, 3], "bad_payload"),
    ],
)
def test_bad_payload_even_when_signed(doc: Any, reason: str) -> None:
    body = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    signed = "SHY1." + b64(body)
    text = signed + "." + b64(KEY.sign(signed.encode()))
    assert check(text).reason == reason


def test_replay_guard_bounds_and_forgets_expired_nonces() -> None:
    guard = ReplayGuard(max_entries=2)
    assert guard.claim("a" * 16, NOW + 10, NOW) == "ok"
    assert guard.claim("b" * 16, NOW + 100, NOW) == "ok"
    assert guard.claim("c" * 16, NOW + 100, NOW) == "full"  # fail closed, never forget a live one
    assert guard.seen("a" * 16, NOW + 10)  # kept while its pass is still valid
    assert guard.claim("c" * 16, NOW + 100, NOW + 11) == "ok"  # a expired: room again
    assert not guard.seen("a" * 16, NOW + 11) and guard.size() == 2
    with pytest.raises(ValueError):
        ReplayGuard(0)


def test_replay_guard_full_refuses_the_pass() -> None:
    guard = ReplayGuard(max_entries=1)
    assert check(make(payload()), guard=guard).ok
    full = check(make(payload(n="1111111111111111")), guard=guard)
    assert (full.ok, full.reason) == (False, "replay_guard_full")


def test_replay_guard_is_thread_safe() -> None:
    guard = ReplayGuard()
    text = make(payload())
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def use() -> None:
        barrier.wait()
        results.append(check(text, guard=guard).ok)

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]


def test_docs_worked_example_verifies() -> None:
    """docs/passes.md's example pass verifies with its key, and its parts add up."""
    doc = (Path(__file__).parents[2] / "docs" / "passes.md").read_text(encoding="utf-8")
    text = re.search(r"^SHY1\.eyJ\S+$", doc, re.M)
    key = re.search(r"public \(`server_key`\) `([0-9a-f]{64})`", doc)
    assert text is not None and key is not None
    issued = 1_764_000_000
    result = verify_pass(
        text.group(0),
        key.group(1),
        now=issued + 100,
        clock_trusted=True,
        site="site-a",
        seen=ReplayGuard(),
    )
    assert result.ok, result.reason
    assert result.pseudonym == pseudonym(bytes(range(32)), "11010519491231002X")
    assert result.expires_at == issued + 300 and len(text.group(0)) == 340
    payload_b64, signature_b64 = text.group(0)[5:].split(".")
    assert payload_b64 in doc and len(payload_b64) == 248
    signature_hex = base64.urlsafe_b64decode(signature_b64 + "==").hex()
    assert signature_hex[:64] in doc and signature_hex[64:] in doc
    body = base64.urlsafe_b64decode(payload_b64 + "==").decode()
    assert body in doc and len(body.encode()) == 186
