"""Length errors state the real bounds (issue 14): ``1..64``, never a bare ``<= 64`` for a
field where empty is refused too, nor a bare "non-empty" for a string that is too long."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
import pytest
from msgspec import Meta

from core import wire, wire_admin
from core.configschema import KeyPath, load


def refusal(value: Any, model: type[Any]) -> str:
    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.convert(value, model)
    return wire.error_text(caught.value, model=model)


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


@pytest.mark.parametrize(
    ("value", "model", "message"),
    [
        ({"boot_id": ""}, wire.Heartbeat, "boot_id: expected `str` of length 1..64"),
        ({"boot_id": "b" * 65}, wire.Heartbeat, "boot_id: expected `str` of length 1..64"),
        (
            {"tap_id": "t", "credential": {"kind": "qr", "token": ""}},
            wire.VerifyRequest,
            "credential.token: expected `str` of length 1..1024",
        ),
        ({"events": []}, wire.AuditBatch, "events: expected `array` of length 1..500"),
        (
            {"events": [{**EVENT, "boot_id": "b" * 65}]},
            wire.AuditBatch,
            "events[0].boot_id: expected `str` of length 1..64",
        ),
        (
            {"username": "a", "role": "guard", "password": "p" * 10, "sites": [""]},
            wire_admin.UserRequest,
            "sites[0]: expected `str` of length 1..64",
        ),
    ],
)
def test_a_length_error_gives_both_bounds(value: Any, model: type[Any], message: str) -> None:
    assert refusal(value, model) == message


def test_an_upper_bound_alone_stays_as_msgspec_says_it() -> None:
    message = refusal({"boot_id": "b", "version": "v" * 65}, wire.Heartbeat)
    assert message == "version: expected `str` of length <= 64"


def test_without_the_model_the_message_is_msgspecs() -> None:
    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.convert({"boot_id": ""}, wire.Heartbeat)
    assert wire.error_text(caught.value) == "boot_id: expected `str` of length >= 1"


class Boom(Exception):
    pass


@dataclass(frozen=True)
class Words:
    prompt: Annotated[str, Meta(min_length=1, max_length=10)] = "x"


@pytest.mark.parametrize("prompt", ["", "x" * 11])
def test_a_config_string_gives_both_bounds(prompt: str) -> None:
    with pytest.raises(Boom) as caught:
        load({"prompt": prompt}, Words, "f.toml", Boom, KeyPath.dotted)
    assert f"prompt: must be 1..10 characters, got {prompt!r}" in str(caught.value)
