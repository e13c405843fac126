"""Every reason code a decision can carry, in one place.

A decision's ``reasons`` reach an integrator through ``POST /v1/verify`` answers, the
journal's decision events (``detail.reasons``), the board and the audit trail; docs/api.md
lists them, and tests/docs/test_reasons.py holds that list, this registry and the code that
produces reasons to the same set. A new reason is added here first, then documented.

Codes are plain strings (they are compared and stored as such); a family with a variable
part (``source_error:<source>``) is listed with every value its part can take, and
:func:`known` also accepts a ``server_refused:<error>`` (whatever error code the server
answered) and a site's own colour reasons, which are configuration, not code.
"""

from __future__ import annotations

from typing import Final

#: The sources of the four-in-one check, as named in ``source_error:<source>``.
SOURCES: Final = ("health_code", "nat", "vaccination", "travel")

#: Codes the server's decision gives (core.policy.decide, server/verify), in the order an
#: answer lists them: health code, NAT, vaccination, travel; then the lone ones.
SERVER: Final[tuple[str, ...]] = (
    "code_not_green",
    "code_colour_unknown",
    "code_missing",
    "source_error:health_code",
    "nat_missing",
    "nat_positive",
    "nat_expired",
    "source_error:nat",
    "doses_below_minimum",
    "source_error:vaccination",
    "travel_flag",
    "travel_missing",
    "source_error:travel",
    "unknown_person",
    "bad_checksum",
    "unknown_qr",
)

#: Why a kiosk decided by itself (device/deciding/verifier.py): the credential refused on
#: the kiosk, the server not asked or not answering, and how the cache was used.
KIOSK: Final[tuple[str, ...]] = (
    "unreadable_card",
    "unreadable_qr",
    "empty_qr",
    "card_expired",
    "server_unavailable",
    "circuit_open",
    "clock_untrusted",
    "cache:verify",
    "cache:snapshot",
    "cache_unavailable",
    "cache_corrupt",
)

#: Why a signed offline pass (docs/passes.md) was refused, from core.passes.verify_pass:
#: each reaches the decision as ``pass_<why>``.
PASS_CHECKS: Final = (
    "bad_format",
    "bad_base64",
    "bad_key",
    "bad_signature",
    "bad_payload",
    "wrong_version",
    "clock_untrusted",
    "expired",
    "not_yet_valid",
    "validity_too_long",
    "site_mismatch",
    "replayed",
    "replay_guard_full",
)

#: What became of a pass's claim on the server (``pass_claim_<what>`` when not claimed).
PASS_CLAIMS: Final = ("offline", "unavailable", "unsupported")

#: Signed offline passes, as the kiosk decides them.
PASSES: Final[tuple[str, ...]] = (
    "signed_pass",
    "pass_claimed",
    "pass_claim_refused",
    "pass_key_missing",
    *(f"pass_claim_{what}" for what in PASS_CLAIMS),
    *(f"pass_{why}" for why in PASS_CHECKS),
)

#: A refusal by the server (revoked, quarantined, a bad request): ``server_refused:<error>``
#: with the server's error code (or the HTTP status when it gave none).
SERVER_REFUSED_PREFIX: Final = "server_refused:"

#: Every fixed code, without duplicates, in the order above.
ALL: Final[tuple[str, ...]] = tuple(dict.fromkeys((*SERVER, *KIOSK, *PASSES)))


def known(code: str, site_reasons: frozenset[str] = frozenset()) -> bool:
    """Whether ``code`` is a reason the code can produce (``site_reasons``: the reason codes
    a site's colour table defines)."""
    if code in site_reasons or code in ALL:
        return True
    return code.startswith(SERVER_REFUSED_PREFIX) and len(code) > len(SERVER_REFUSED_PREFIX)
