"""Settling a request's identity: ``identify()`` during it, then, after the response, parking
anonymous events, releasing a now-known visitor's, and writing the identity cookies.

Nothing here may break a page: a stale cookie is replaced or deleted, and cookies are written
only with the visitor's consent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis
from flask import current_app, has_request_context

from ..delivery.parking import Parking
from ..events import Event
from .cookies import KLA_ID_COOKIE, MAX_COOKIE_CHARS, encode_kla_id, sign
from .identifiers import IDENTIFY_KEYS, mask_email, mask_profile
from .resolve import (
    ConsentLoader,
    IdentityLoader,
    browse_allowed,
    forget_visitor,
    visitor_profile,
)
from .rules import needs_identity, normalize_profile, same_person, usable_identity, with_identity
from .visit import Visit, current_visit, has_identity_input, new_anonymous_id

__all__ = ["identify", "settle"]

log = logging.getLogger(__name__)


def identify(
    attributes: Mapping[str, Any], consent_loader: ConsentLoader | None = None
) -> dict[str, Any]:
    """The visitor is now known: for the rest of this request and, with consent, later ones.

    Returns the identity kept ({} when it holds no valid email or E.164 phone number).
    """
    unknown = sorted(set(attributes) - set(IDENTIFY_KEYS))
    if unknown:
        raise TypeError(
            f"identify() got unknown attribute(s) {', '.join(unknown)}; "
            f"known: {', '.join(IDENTIFY_KEYS)}"
        )
    profile = usable_identity(attributes)
    if not profile:
        log.warning(
            "klaviyo: identify() without a valid email or E.164 phone_number ignored (%s)",
            mask_profile(normalize_profile(attributes)),
        )
        return {}
    email = profile.get("email", "")
    if email.rpartition("@")[2] == "example.com":
        log.warning(
            "klaviyo: %s identified, but Klaviyo drops @example.com addresses: its events "
            "will not show up in Klaviyo",
            mask_email(email),
        )
    if not has_request_context():
        return profile
    visit = current_visit()
    before = visit.identified
    if before is None:
        before = visit.profile if browse_allowed(consent_loader) else {}
    if same_person(before, profile):
        profile = {**before, **profile}
    if "email" not in profile and "phone_number" not in profile:
        profile.pop("external_id", None)
    visit.identified = profile
    if profile != visit.profile:
        visit.changed = True
    visit.kla_changed = True  # re-set __kla_id: it outlives Safari's cap on script cookies
    forget_visitor()
    return dict(profile)


def _parking(connection: redis.Redis, journal: Any = None) -> Parking:
    """The app's parking (``KLAVIYO_PARK_MAX_EVENTS``, ``KLAVIYO_PARK_TTL``); ``journal``: the
    inspector's, when it is on."""
    config = current_app.config
    return Parking(
        connection,
        max_events=config["KLAVIYO_PARK_MAX_EVENTS"],
        ttl=config["KLAVIYO_PARK_TTL"],
        journal=journal,
    )


def settle(
    response: Any,
    pending: Sequence[Event],
    *,
    loader: IdentityLoader | None,
    consent_loader: ConsentLoader | None,
    connection: Callable[[], redis.Redis],
    check: Callable[[Event], bool],
    journal: Callable[[], Any] | None = None,
) -> list[Event]:
    """Identity's part of the after-request hook; returns the events to queue now.

    Events with an identity pass through. Anonymous ones get the visitor's profile if the
    request made the visitor known (``identify()`` after the track), else are parked (one
    round trip) under the anonymous id, created on first need. When the visitor is known and
    has parked events, they are taken back and returned under the profile plus the anonymous
    id, each checked by ``check`` (validation). Cookies are written last, only with consent.
    """
    waiting: list[Event] = []
    ready: list[Event] = []
    for event in pending:
        (waiting if needs_identity(event.profile) else ready).append(event)
    if not waiting and not has_identity_input():
        return ready
    visit = current_visit()
    consent = browse_allowed(consent_loader)
    moment = visit.identified is not None or visit.landed  # the visitor just became known
    if waiting or (visit.anonymous_id and (visit.parked or moment)):
        forget_visitor()  # the view may have logged someone in
        known = visitor_profile(loader, consent_loader)
    else:
        known = {}
    anonymous_id = visit.anonymous_id if consent else None

    if waiting and known:
        attached = (with_identity(event, known, anonymous_id) for event in waiting)
        ready.extend(event for event in attached if check(event))
    elif waiting:
        limit = current_app.config["KLAVIYO_PARK_MAX_EVENTS"]
        if not consent or limit == 0:
            log.debug(
                "klaviyo: %d anonymous event(s) not kept (%s)",
                len(waiting),
                "no consent" if not consent else "KLAVIYO_PARK_MAX_EVENTS is 0",
            )
        else:
            if not visit.anonymous_id:
                visit.anonymous_id = new_anonymous_id()
            visit.parked = _parking(connection(), journal and journal()).park(
                visit.anonymous_id, [event.to_dict() for event in waiting]
            )
            visit.changed = True
    if known and anonymous_id and (visit.parked or moment):
        to = next(
            (str(known[k]) for k in ("email", "phone_number", "external_id") if k in known), ""
        )
        taken = _parking(connection(), journal and journal()).take(anonymous_id, to=to)
        released = [with_identity(Event.from_dict(data), known, anonymous_id) for data in taken]
        ready.extend(event for event in released if check(event))
        if taken:
            log.info("klaviyo: %d parked event(s) released for %s", len(taken), mask_profile(known))
        if visit.parked:
            visit.parked = 0
            visit.changed = True
    if consent:
        _write_cookies(response, visit)
    return ready


def _write_cookies(response: Any, visit: Visit) -> None:
    """The signed token when it changed (deleted when stale and empty), ``__kla_id`` if asked."""
    config = current_app.config
    name = config["KLAVIYO_COOKIE_NAME"]
    options = {
        "max_age": config["KLAVIYO_COOKIE_MAX_AGE"],
        "domain": config["KLAVIYO_COOKIE_DOMAIN"],
        "secure": bool(config["KLAVIYO_COOKIE_SECURE"]),
        "samesite": "Lax",
        "path": "/",
    }
    state = visit.state()
    if state and (visit.changed or visit.stale):
        token = sign(state)
        if len(token) > MAX_COOKIE_CHARS - len(name) - 100 and "p" in state:
            # Absurdly long names: keep the identifiers, which is what matters.
            state["p"] = {
                k: v for k, v in state["p"].items() if k not in ("first_name", "last_name")
            }
            token = sign(state)
        response.set_cookie(name, token, httponly=True, **options)
        response.vary.add("Cookie")
        header_name = config["KLAVIYO_ID_HEADER"]
        if visit.header and header_name:
            response.headers[header_name] = token  # a headless front end keeps it for us
            response.vary.add(header_name)
    elif visit.stale:
        response.delete_cookie(
            name,
            domain=options["domain"],
            path="/",
            secure=options["secure"],
            httponly=True,
            samesite="Lax",
        )
    if visit.kla_changed:
        kla = dict(visit.kla or {})
        if visit.kx:
            kla["$exchange_id"] = visit.kx
        value = encode_kla_id(kla) if kla else ""
        if value and len(value) <= MAX_COOKIE_CHARS - 100:
            # Not HttpOnly: klaviyo.js reads it. Server-set, so Safari keeps it past 7 days.
            response.set_cookie(KLA_ID_COOKIE, value, httponly=False, **options)
