"""The right to be forgotten: ``klaviyo.forget(email=... | phone_number=...)``.

Klaviyo deletes the profile on a deletion request (``profile_deletion``); locally, everything not
yet sent for that person goes (outbox, parked events, spool, dead letters) and, for
``KLAVIYO_FORGET_HOLD`` seconds, whatever is queued for them afterwards is dropped before
sending, so an event in flight cannot re-create the deleted profile. In a request, the visitor
this is about also loses the identity cookie's profile and anonymous id.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from flask import current_app, g, has_request_context

from ._state import current_state
from .delivery.forgetting import DELETION_KIND, Purged, identifiers_of, purge
from .delivery.handoff import push_now
from .delivery.operations import Operation
from .exceptions import KlaviyoSchemaError
from .identity.identifiers import mask_email, mask_phone
from .identity.visit import current_visit, new_anonymous_id
from .profiles import email_of, phone_of
from .queueing import PENDING_EVENTS, PENDING_OPERATIONS

__all__ = ["Forgotten", "forget"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Forgotten:
    """What ``forget`` did: the deletion requests queued and what was dropped locally."""

    identifiers: tuple[str, ...]
    requests: int
    purged: Purged
    this_request: int  # events and operations of this request dropped before the response


def _identifiers(email: Any, phone_number: Any) -> list[tuple[str, str]]:
    found = []
    if email is not None:
        found.append(("email", email_of(email)))
    if phone_number is not None:
        found.append(("phone_number", phone_of(phone_number)))
    if not found:
        raise KlaviyoSchemaError("profile", "email", "forget() needs an email or phone_number")
    return found


def forget(*, email: Any = None, phone_number: Any = None) -> Forgotten:
    """Request deletion in Klaviyo and drop what waits locally (see the module docstring)."""
    found = _identifiers(email, phone_number)
    values = {value for _, value in found}
    state = current_state()
    anonymous_ids: list[str] = []
    dropped_here = 0
    if has_request_context():
        dropped_here = _drop_from_this_request(values)
        anonymous_ids = _forget_visitor(values)
    purged = purge(
        state.redis,
        values,
        hold=float(current_app.config["KLAVIYO_FORGET_HOLD"]),
        streams=[state.outbox.stream],
        spool=state.spool,
        anonymous_ids=anonymous_ids,
    )
    push_now([Operation(DELETION_KIND, {"profile": {key: value}}, value) for key, value in found])
    log.warning(
        "klaviyo: forgotten %s: deletion requested in Klaviyo, %s",
        ", ".join(mask_email(v) if "@" in v else mask_phone(v) for v in sorted(values)),
        purged,
    )
    return Forgotten(tuple(sorted(values)), len(found), purged, dropped_here)


def _drop_from_this_request(values: set[str]) -> int:
    """This request's own events and operations for the person: never queued."""
    dropped = 0
    for name in (PENDING_EVENTS, PENDING_OPERATIONS):
        pending = g.get(name)
        if not pending:
            continue
        kept = [item for item in pending if not identifiers_of(item.to_dict()) & values]
        dropped += len(pending) - len(kept)
        setattr(g, name, kept)
    return dropped


def _forget_visitor(values: set[str]) -> list[str]:
    """When the visitor is the person: a fresh anonymous id, no profile in the cookie; the old
    anonymous id's parked events are dropped with the rest."""
    visit = current_visit()
    profile = visit.identified if visit.identified is not None else visit.profile
    known = {str(v).lower() for k, v in (profile or {}).items() if k in ("email", "phone_number")}
    if not known & values:
        return []
    old = [visit.anonymous_id] if visit.anonymous_id else []
    visit.identified = {}
    visit.profile = {}
    visit.kx = None
    visit.parked = 0
    visit.anonymous_id = new_anonymous_id()
    visit.changed = True
    return old
