"""The outcomes of a tap and the words spoken for them by default (DESIGN.md "Outcomes").

The policy decides an :class:`Outcome` and reason codes; the prompt is attached afterwards
from the site's (or kiosk's) prompt table, so deciding never needs presentation text.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Literal, get_args


class Outcome(StrEnum):
    """What a tap ends in. A ``StrEnum``, so it is its own wire and journal spelling."""

    PASS = "pass"
    CHECK = "check"
    NAT_EXPIRED = "nat_expired"
    INVALID_CREDENTIAL = "invalid_credential"
    FAULT = "fault"


#: The same sets as types, for schemas (wire bodies, configuration keys); a test below the
#: definitions holds them equal to the enum.
DecisionName = Literal["pass", "check", "nat_expired", "invalid_credential"]
OutcomeName = Literal["pass", "check", "nat_expired", "invalid_credential", "fault"]

#: The outcomes a four-in-one decision (server or cache) can produce; ``fault`` is the
#: kiosk's own and only ever appears in its journal.
DECISIONS: frozenset[Outcome] = frozenset(
    {Outcome.PASS, Outcome.CHECK, Outcome.NAT_EXPIRED, Outcome.INVALID_CREDENTIAL}
)

#: Every outcome, as the strings that travel in JSON.
ALL_OUTCOMES: frozenset[str] = frozenset(o.value for o in Outcome)

#: zh-CN prompts spoken when neither the site nor the kiosk configures other words.
DEFAULT_PROMPTS: Mapping[str, str] = MappingProxyType(
    {
        Outcome.PASS.value: "绿码通行",
        Outcome.CHECK.value: "非绿码请核查",
        Outcome.NAT_EXPIRED.value: "你的核酸结果已超时",
        Outcome.INVALID_CREDENTIAL.value: "证件无效，请重新刷卡",
        Outcome.FAULT.value: "设备故障，请联系工作人员",
    }
)


def is_decision(value: object) -> bool:
    """Whether ``value`` is the wire spelling of a decision outcome (not ``fault``)."""
    return isinstance(value, str) and value in _DECISION_VALUES


_DECISION_VALUES = frozenset(o.value for o in DECISIONS)


if set(get_args(OutcomeName)) != ALL_OUTCOMES or set(get_args(DecisionName)) != _DECISION_VALUES:
    raise AssertionError("core.outcomes: the Literal types and the Outcome enum disagree")
