"""Decoding request bodies: msgspec wire models vs the old hand validators vs pydantic v2.

Issue 9 part 3 picks the schema library for ``core.wire``; this measures the two bodies that
matter, side by side in one run on one core:

* ``POST /v1/verify``, the tap's hot path: one small body per tap;
* ``POST /v1/audit`` with 100 events, the largest routine body.

Contenders, each decoding raw bytes and validating every documented constraint:

* ``msgspec``: ``msgspec.json.decode(raw, type=VerifyRequest)`` / ``type=AuditBatch``
  (:mod:`core.wire`, exactly what the server runs);
* ``hand``: ``json.loads`` plus field-by-field checks, a faithful minimal copy of the
  validators the server used before (``server/http/validation.py``), kept here so the
  comparison survives their removal;
* ``pydantic``: pydantic v2 models with the same constraints, ``TypeAdapter.validate_json``
  (skipped with a note when pydantic is not installed; it is not a project dependency).

For audit the full server path is timed as well (privacy scan of every string, the event
hash, the typed check): ``server.audit.ingestion.parse_batch`` against the old equivalent.

    .venv/bin/python bench/wire_decode.py [--repeat 15] [--number 2000]

Prints a table of µs per body and the ratios to msgspec, then a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import timeit
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgspec

from core import audit, wire
from core.idnumbers import CLEAR_ID, find_clear_ids
from server.audit.ingestion import parse_batch
from server.http.bodies import decode_object

VERIFY = json.dumps(
    {
        "tap_id": "k1-000042-3f9a",
        "credential": {"kind": "id_card", "id_number": "110101199003074514"},
    }
).encode()


def audit_batch(n: int) -> bytes:
    """``n`` chained decision events as a kiosk journal sends them."""
    events, prev = [], audit.GENESIS_HASH
    for seq in range(1, n + 1):
        event: dict[str, Any] = {
            "seq": seq,
            "wall_time": "2026-11-23T08:00:00.123456+08:00",
            "mono_ns": 123456789012 + seq,
            "boot_id": "3f9a0b2e-77c1-4d7e-9a51-0b2e3f9a77c1",
            "clock_trusted": True,
            "kind": "decision",
            "outcome": "pass",
            "prompt": "绿码通行",
            "masked_id": "1101**********4514",
            "pseudonym": "9f2c" * 16,
            "offline": False,
            "cache_age_s": None,
            "latency_ms": 5.1,
            "detail": {"reasons": [], "tap_id": f"k1-{seq:06d}-3f9a"},
            "prev_hash": prev,
        }
        event["hash"] = prev = audit.hash_event(event)
        events.append(event)
    return json.dumps({"events": events}, ensure_ascii=False).encode()


# -- the old hand path, minimal and faithful ------------------------------------------------


class Refused(ValueError):
    pass


_TAP = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX = re.compile(r"[0-9a-f]{1,128}")
_MASKED = re.compile(r"[0-9A-Za-z*]{1,32}")
_KINDS = frozenset({"decision", "fault", "guard", "system"})
_OUTCOMES = frozenset({"pass", "check", "nat_expired", "invalid_credential", "fault"})


def _string(o: Mapping[str, Any], k: str, hi: int, lo: int = 0, *, optional: bool = False,
            pattern: re.Pattern[str] | None = None) -> str | None:  # fmt: skip
    value = o.get(k)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not lo <= len(value) <= hi:
        raise Refused(k)
    if pattern is not None and pattern.fullmatch(value) is None:
        raise Refused(k)
    return value


def _integer(o: Mapping[str, Any], k: str, lo: int) -> int:
    value = o.get(k)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= 2**63 - 1:
        raise Refused(k)
    return value


def _number(o: Mapping[str, Any], k: str) -> float | None:
    value = o.get(k)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Refused(k)
    if not math.isfinite(value) or not 0 <= value <= 1e15:
        raise Refused(k)
    return float(value)


def _boolean(o: Mapping[str, Any], k: str) -> bool:
    value = o.get(k)
    if not isinstance(value, bool):
        raise Refused(k)
    return value


def _old_object(raw: bytes) -> dict[str, Any]:
    value = json.loads(raw.decode("utf-8"))
    if not isinstance(value, dict):
        raise Refused("body")
    return value


def hand_verify(raw: bytes) -> tuple[str, str, str]:
    body = _old_object(raw)
    tap_id = _string(body, "tap_id", 64, pattern=_TAP)
    credential = body.get("credential")
    if not isinstance(credential, dict):
        raise Refused("credential")
    kind = _string(credential, "kind", 16)
    if kind not in ("id_card", "ss_card", "qr"):
        raise Refused("kind")
    number = _string(credential, "id_number", 32)
    card_type = _string(credential, "card_type", 16, optional=True) or "resident"
    if card_type not in ("resident", "J", "I", "Y"):
        raise Refused("card_type")
    assert tap_id is not None and number is not None
    return tap_id, number, card_type


def _old_refuse_clear_ids(value: Any) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if CLEAR_ID.search(item):
                raise Refused("clear id")
        elif isinstance(item, dict):
            for key, child in item.items():
                if CLEAR_ID.search(key):
                    raise Refused("clear id")
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)


def _aware(text: str) -> bool:
    try:
        return datetime.fromisoformat(text).utcoffset() is not None
    except ValueError:
        return False


def _hand_event(raw: Any, *, full: bool) -> tuple[Any, ...]:
    if not isinstance(raw, dict):
        raise Refused("event")
    if full:
        _old_refuse_clear_ids(raw)
    masked = _string(raw, "masked_id", 32, optional=True, pattern=_MASKED)
    if masked is not None and "*" not in masked and len(masked) > 8:
        raise Refused("masked_id")
    detail = raw.get("detail") or {}
    if not isinstance(detail, dict) or len(json.dumps(detail, sort_keys=True)) > 4096:
        raise Refused("detail")
    if raw.get("kind") not in _KINDS:
        raise Refused("kind")
    outcome = _string(raw, "outcome", 32, optional=True)
    if outcome is not None and outcome not in _OUTCOMES:
        raise Refused("outcome")
    wall_time = _string(raw, "wall_time", 64)
    if wall_time is None or not _aware(wall_time):
        raise Refused("wall_time")
    hash_ok = audit.hash_event(raw) == raw.get("hash") if full else True
    return (
        _integer(raw, "seq", 1), _integer(raw, "mono_ns", 0), _string(raw, "boot_id", 64, 1),
        _boolean(raw, "clock_trusted"), _boolean(raw, "offline"),
        _string(raw, "prompt", 200, optional=True),
        _string(raw, "pseudonym", 128, optional=True, pattern=_HEX),
        _number(raw, "cache_age_s"), _number(raw, "latency_ms"),
        _string(raw, "prev_hash", 64, pattern=_HEX64), _string(raw, "hash", 64, pattern=_HEX64),
        hash_ok,
    )  # fmt: skip


def hand_audit(raw: bytes, *, full: bool = False) -> list[tuple[Any, ...]]:
    events = _old_object(raw).get("events")
    if not isinstance(events, list) or not 1 <= len(events) <= 500:
        raise Refused("events")
    return [_hand_event(e, full=full) for e in events]


# -- the new path ---------------------------------------------------------------------------


def msgspec_verify(raw: bytes) -> wire.VerifyRequest:
    return msgspec.json.decode(raw, type=wire.VerifyRequest)


def msgspec_audit(raw: bytes) -> wire.AuditBatch:
    return msgspec.json.decode(raw, type=wire.AuditBatch)


def server_audit(raw: bytes) -> Any:
    return parse_batch(decode_object(raw))


def old_server_audit(raw: bytes) -> Any:
    return hand_audit(raw, full=True)


# -- pydantic v2, the same constraints ------------------------------------------------------


def pydantic_contenders() -> dict[str, Callable[[bytes], Any]]:
    """``{"verify": …, "audit": …}`` decoders, or ``{}`` without pydantic."""
    try:
        import pydantic  # noqa: F401  (optional, measured only)
    except ImportError:
        return {}
    from typing import Annotated, Literal

    from pydantic import AfterValidator, BaseModel, Field, TypeAdapter

    def aware(text: str) -> str:
        if not _aware(text):
            raise ValueError("must be an ISO 8601 timestamp with a UTC offset")
        return text

    class IdCard(BaseModel):
        kind: Literal["id_card", "ss_card"]
        id_number: Annotated[str, Field(max_length=32)]
        card_type: Literal["resident", "J", "I", "Y"] | None = None

    class Qr(BaseModel):
        kind: Literal["qr"]
        token: Annotated[str, Field(min_length=1, max_length=1024)]

    class Verify(BaseModel):
        tap_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
        credential: Annotated[IdCard | Qr, Field(discriminator="kind")]

    hex64 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    amount = Annotated[float, Field(ge=0, le=1e15, allow_inf_nan=False)]

    class Event(BaseModel):
        seq: Annotated[int, Field(ge=1, le=2**63 - 1, strict=True)]
        wall_time: Annotated[str, Field(max_length=64), AfterValidator(aware)]
        mono_ns: Annotated[int, Field(ge=0, strict=True)]
        boot_id: Annotated[str, Field(min_length=1, max_length=64)]
        clock_trusted: Annotated[bool, Field(strict=True)]
        kind: Literal["decision", "fault", "guard", "system"]
        offline: Annotated[bool, Field(strict=True)]
        prev_hash: hex64
        hash: hex64
        outcome: Literal["pass", "check", "nat_expired", "invalid_credential", "fault"] | None = (
            None
        )
        prompt: Annotated[str, Field(max_length=200)] | None = None
        masked_id: Annotated[str, Field(pattern=r"^[0-9A-Za-z*]{1,32}$")] | None = None
        pseudonym: Annotated[str, Field(pattern=r"^[0-9a-f]{1,128}$")] | None = None
        cache_age_s: amount | None = None
        latency_ms: amount | None = None
        detail: dict[str, Any] | None = None

    class Batch(BaseModel):
        events: Annotated[list[Event], Field(min_length=1, max_length=500)]

    verify, batch = TypeAdapter(Verify), TypeAdapter(Batch)
    return {"verify": verify.validate_json, "audit": batch.validate_json}


# -- the run --------------------------------------------------------------------------------

#: (body, contender, decoder, raw body, calls per timing)
Row = tuple[str, str, Callable[[bytes], Any], bytes, int]


def best_us(rows: list[Row], repeat: int) -> dict[str, dict[str, float]]:
    """µs per body, best of ``repeat`` rounds; every round times each contender once, in
    turn, so background load on a shared machine hits them all alike."""
    for _, _, fn, raw, _ in rows:
        fn(raw)  # warm up (and fail loudly on a bad body)
    best: dict[str, dict[str, float]] = {}
    for _ in range(repeat):
        for body, name, fn, raw, number in rows:
            us = timeit.timeit(lambda fn=fn, raw=raw: fn(raw), number=number) / number * 1e6
            timings = best.setdefault(body, {})
            timings[name] = min(us, timings.get(name, us))
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--number", type=int, default=2000, help="verify calls per run")
    args = parser.parse_args(argv)
    batch = audit_batch(100)
    assert not find_clear_ids(json.loads(batch))  # the bench body is a valid one
    pyd = pydantic_contenders()
    rows: list[Row] = [
        ("verify", "msgspec", msgspec_verify, VERIFY, args.number),
        ("verify", "hand", hand_verify, VERIFY, args.number),
        ("audit x100, validate", "msgspec", msgspec_audit, batch, args.number // 20),
        ("audit x100, validate", "hand", hand_audit, batch, args.number // 20),
        ("audit x100, server path", "msgspec", server_audit, batch, args.number // 100),
        ("audit x100, server path", "hand", old_server_audit, batch, args.number // 100),
    ]
    if pyd:
        rows.insert(2, ("verify", "pydantic", pyd["verify"], VERIFY, args.number))
        rows.insert(5, ("audit x100, validate", "pydantic", pyd["audit"], batch, args.number // 20))
    results = best_us(rows, args.repeat)
    print(f"python {sys.version.split()[0]}, msgspec {msgspec.__version__}, pydantic "
          f"{_pydantic_version() or 'not installed'}; verify body {len(VERIFY)} B, "
          f"audit body {len(batch)} B")  # fmt: skip
    print(f"{'body':26} {'decoder':9} {'µs/body':>10} {'× msgspec':>10}")
    for body, timings in results.items():
        for name, us in timings.items():
            print(f"{body:26} {name:9} {us:10.1f} {us / timings['msgspec']:10.2f}")
    print(json.dumps({b: {n: round(us, 2) for n, us in t.items()} for b, t in results.items()}))
    return 0


def _pydantic_version() -> str:
    try:
        import pydantic
    except ImportError:
        return ""
    return str(pydantic.VERSION)


if __name__ == "__main__":
    raise SystemExit(main())
