"""``POST /v1/guard/lookup``: 一键三查 for a guard or an admin (docs/lookup.md).

POST, so that numbers stay out of URLs and access logs. The number is checked before
anything else (``400``, never echoed); the site is the one named or the guard's only one
(``403`` for a site not theirs); the lookup is then recorded and rate limited per person
(:mod:`server.lookup.store`, ``429`` with ``Retry-After``) before a phone is resolved
(``404`` for nobody) or a source is asked. The decision is the kiosk's: the app's verifier
and the site's policy.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import cast

import msgspec
from aiohttp import web

from core import idnumbers as identity
from core.outcomes import DecisionName
from core.policy import prompt_for
from server.accounts.principal import Principal, require_role, require_site
from server.appkeys import CLOCK, CONFIG, DATABASE, VERIFIER
from server.errors import BadRequest
from server.http.bodies import read_body
from server.http.middleware import json_error
from server.http.operations import Operation
from server.http.ratelimit import overloaded
from server.lookup import facts, store
from server.lookup.phones import find_person, normalise_phone
from server.lookup.settings import LookupSettings
from server.lookup.texts import Lang
from server.lookup.wire import LookupAnswer, LookupRequest, RecoveryText
from server.verify.service import Verification

log = logging.getLogger(__name__)


def lookup_settings(app: web.Application) -> LookupSettings:
    """``[lookup]`` of the app's configuration (``ServerConfig.lookup``)."""
    return app[CONFIG].lookup


def checked_id(text: str) -> str:
    """A normalised ID or permit number, or a ``400`` that says what is wrong with it."""
    number = identity.normalise(text)
    if identity.is_permit_number(number):
        return number
    if not identity.is_well_formed(number):
        raise json_error(
            web.HTTPBadRequest,
            "invalid_id_number",
            "id_number: must be 17 digits and a digit or X, or a permit number of 3 letters"
            " and 12 digits",
        )
    if not identity.checksum_ok(number):
        raise json_error(
            web.HTTPBadRequest,
            "invalid_id_number",
            "id_number: the check character (the last one) does not match: mistyped?",
        )
    return number


def checked_phone(text: str) -> str:
    """The canonical form of a phone number, or a ``400``."""
    phone = normalise_phone(text)
    if phone is None:
        raise json_error(
            web.HTTPBadRequest,
            "invalid_phone",
            "phone: must be a mainland mobile number (11 digits, +86 optional) or + and the"
            " country code",
        )
    return phone


def chosen_site(user: Principal, asked: str | None) -> str:
    """The site whose policy decides: the one asked for (if the caller may see it), else a
    guard's only site."""
    if asked is not None:
        require_site(user, asked)
        return asked
    if user.role == "guard" and len(user.sites) == 1:
        return next(iter(user.sites))
    raise json_error(
        web.HTTPBadRequest, "site_required", "site: name the site whose policy decides"
    )


async def lookup(request: web.Request) -> web.Response:
    """``POST /v1/guard/lookup {"id_number"} | {"phone"}`` → :class:`LookupAnswer`."""
    user = require_role(request, "admin", "guard")
    body = await read_body(request, LookupRequest)
    if (body.id_number is None) == (body.phone is None):
        raise BadRequest("body: give exactly one of id_number and phone")
    by: store.By = "id" if body.id_number is not None else "phone"
    number = checked_id(body.id_number) if body.id_number is not None else None
    phone = checked_phone(body.phone) if body.phone is not None else None
    site = chosen_site(user, body.site)
    app = request.app
    db, settings, now = app[DATABASE], lookup_settings(app), app[CLOCK]()
    masked = identity.mask(number) if number is not None else ""
    reservation = await db.run(
        store.reserve,
        username=user.username,
        site=site,
        by=by,
        masked_id=masked,
        now=now,
        max_per_window=settings.max_per_window,
        window_s=settings.window_s,
    )
    if reservation.lookup_id is None:
        log.info("lookup by %s refused: over its rate limit", user.username)
        return overloaded(reservation.retry_after_s, "lookup")
    lookup_id = reservation.lookup_id
    if phone is not None:
        number = await db.run(find_person, phone)
        if number is None:
            await db.run(store.finish, lookup_id, "", store.NOT_FOUND)
            log.info("lookup %d by %s at %s: phone matches nobody", lookup_id, user.username, site)
            raise json_error(web.HTTPNotFound, "not_found", "no person has this phone number")
        masked = identity.mask(number)
    assert number is not None
    answer = await _answer(app, number, site, by, body.lang, now, settings)
    await db.run(store.finish, lookup_id, masked, answer.outcome)
    log.info(
        "lookup %d by %s at %s: %s by %s -> %s %s",
        lookup_id,
        user.username,
        site,
        masked,
        by,
        answer.outcome,
        ",".join(answer.reasons),
    )
    return web.Response(
        body=msgspec.json.encode(answer), content_type="application/json", charset="utf-8"
    )


async def _answer(
    app: web.Application,
    number: str,
    site: str,
    by: store.By,
    lang: Lang,
    now: datetime,
    settings: LookupSettings,
) -> LookupAnswer:
    """Decide as a kiosk at ``site`` would, and gather what the guard sees with it."""
    policy = app[CONFIG].policy_for(site)
    verifier = app[VERIFIER]
    card_type = "I" if identity.is_permit_number(number) else "resident"
    verification: Verification = await verifier.verify(number, now, policy, card_type=card_type)
    where = facts.origins(verifier)
    history = None
    if facts.wants_history(verification, where):
        history = await app[DATABASE].run(store.history, number, settings.nat_results)
    decision = verification.decision
    recovery = settings.recovery(site, decision.reasons, policy, lang)
    return LookupAnswer(
        outcome=cast(DecisionName, decision.outcome.value),  # decide() never gives fault
        prompt=prompt_for(decision, policy),
        reasons=list(decision.reasons),
        recovery=[RecoveryText(r.reason, r.text) for r in recovery],
        checks=facts.build(verification, where, history, now, policy),
        masked_id=verification.masked_id,
        site=site,
        by=by,
        looked_up_at=store.iso(now),
    )


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST",
        "/v1/guard/lookup",
        lookup,
        "user",
        "一键三查: the outcome a person would get at the caller's site, the source records "
        "behind it and how to get back to a pass (guard or admin)",
        request=LookupRequest,
        response=LookupAnswer,
        errors=(400, 403, 404, 429),
    ),
)
