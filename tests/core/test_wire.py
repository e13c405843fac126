"""core.wire: the shared models accept what docs/api.md allows and refuse the rest, naming
the field in one path style on both ends."""

from __future__ import annotations

from typing import Any, get_args

import msgspec
import pytest

from core import audit, wire
from core.outcomes import ALL_OUTCOMES, DECISIONS

EVENT: dict[str, Any] = {
    "seq": 1,
    "wall_time": "2026-11-23T08:00:00+08:00",
    "mono_ns": 5,
    "boot_id": "b",
    "clock_trusted": True,
    "kind": "decision",
    "offline": False,
    "prev_hash": "0" * 64,
    "hash": "a" * 64,
}


def refusal(value: Any, model: type[Any], where: str = "") -> str:
    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.convert(value, model)
    return wire.error_text(caught.value, where)


def test_literals_follow_the_core_sets() -> None:
    assert set(get_args(wire.JournalOutcome)) == ALL_OUTCOMES
    assert set(get_args(wire.Outcome)) == {o.value for o in DECISIONS}
    kinds = wire.AuditEventIn.__annotations__["kind"]
    assert (
        set(get_args(msgspec.inspect.type_info(wire.AuditEventIn).fields[5].type.values)) or kinds
    )
    field = {f.name: f for f in msgspec.inspect.type_info(wire.AuditEventIn).fields}["kind"]
    assert isinstance(field.type, msgspec.inspect.LiteralType)
    assert set(field.type.values) == audit.KINDS


@pytest.mark.parametrize(
    ("value", "model", "where", "expected"),
    [
        ({}, wire.VerifyRequest, "", "tap_id: required"),
        ({"tap_id": "t", "credential": {}}, wire.VerifyRequest, "", "credential.kind: required"),
        ([1], wire.VerifyRequest, "", "body must be a JSON object"),
        ({"events": [{**EVENT, "seq": 0}]}, wire.AuditBatch, "",
         "events[0].seq: expected `int` >= 1"),
        ({**EVENT, "seq": True}, wire.AuditEventIn, "events[3]",
         "events[3].seq: expected `int`, got `bool`"),
        ({**EVENT, "hash": "A" * 64}, wire.AuditEventIn, "events[3]",
         "events[3].hash: expected `str` matching"),
        ({**EVENT, "masked_id": "110101199003"}, wire.AuditEventIn, "events[0]",
         "events[0].masked_id: must have the mask's shape (1101**********4514)"),
        ({**EVENT, "wall_time": "2026-11-23T08:00:00"}, wire.AuditEventIn, "",
         "wall_time: must be an ISO 8601 timestamp with a UTC offset"),
    ],
)  # fmt: skip
def test_errors_name_the_field(value: Any, model: type[Any], where: str, expected: str) -> None:
    assert refusal(value, model, where).startswith(expected)


def test_refused_values_are_not_quoted() -> None:
    """A refused enum value may be personal data: the message never repeats it."""
    secret = "110101199003074514"
    text = refusal({"tap_id": "t", "credential": {"kind": secret}}, wire.VerifyRequest)
    assert text == "credential.kind: not one of the allowed values"
    text = refusal({**EVENT, "outcome": secret}, wire.AuditEventIn, "events[1]")
    assert text.startswith("events[1].outcome:") and secret not in text


@pytest.mark.parametrize("tap_id", ["t-1\n", "", "x" * 65, "tap/1", "has space"])
def test_patterns_match_the_whole_value(tap_id: str) -> None:
    """``$`` would let Python accept a trailing newline; :func:`wire.whole` does not."""
    doc = {"tap_id": tap_id, "credential": {"kind": "qr", "token": "x"}}
    assert refusal(doc, wire.VerifyRequest).startswith("tap_id:")


def test_credential_kinds_and_unknown_fields() -> None:
    doc = {"tap_id": "t", "extra": 1, "credential": {"kind": "ss_card", "id_number": "1", "x": 2}}
    request = msgspec.convert(doc, wire.VerifyRequest)
    assert request.credential == wire.SsCardCredential("1", None)
    qr = msgspec.convert(
        {"tap_id": "t", "credential": {"kind": "qr", "token": "z"}}, wire.VerifyRequest
    )
    assert isinstance(qr.credential, wire.QrCredential)


def test_requests_are_encoded_as_documented() -> None:
    """What the kiosk sends: no ``card_type`` for a resident card, no empty rotation keys."""
    request = wire.VerifyRequest("t", wire.IdCardCredential("110101199003074514"))
    assert msgspec.to_builtins(request) == {
        "tap_id": "t",
        "credential": {"kind": "id_card", "id_number": "110101199003074514"},
    }
    session = wire.SessionRequest("k-1", "n" * 16, 5, "a" * 128)
    assert set(msgspec.to_builtins(session)) == {"device_id", "nonce", "time", "signature"}


def test_verify_answer_checks() -> None:
    answer = {
        "tap_id": "t", "outcome": "check", "prompt": "p", "masked_id": "1101**4514",
        "site": "s", "reasons": ["nat_missing"], "server_time": "2026-11-23T08:00:00+00:00",
        "checks": {
            "nat": {"status": "missing", "window_hours": 48},
            "travel": {"status": "ok", "stale": True, "age_s": 600.0, "error": "timeout",
                       "flagged": False, "area": ""},
        },
    }  # fmt: skip
    typed = msgspec.convert(answer, wire.VerifyResponse)
    assert msgspec.to_builtins(typed.checks) == answer["checks"]
    answer["checks"]["nat"] = {"status": "missing"}
    assert refusal(answer, wire.VerifyResponse) == "checks.nat.window_hours: required"
    answer["outcome"] = "fault"  # the kiosk's own outcome never comes from the server
    assert refusal(answer, wire.VerifyResponse).startswith("outcome:")
