"""Request Profile Deletion (``POST /api/data-privacy-deletion-jobs``).

Exactly one of the profile's ``id``, ``email`` or ``phone_number`` (request_profile_deletion.json:
"If multiple identifiers are provided, we will return an error"). Klaviyo answers 202 with no
body and deletes asynchronously; the stand-in deletes at once: the profile, its events and its
consent records. Every accepted request is kept (``fake.deletions()``), with the ids of the
profiles it deleted (none when nobody matched: Klaviyo accepts such a request too).
"""

from __future__ import annotations

import logging
from typing import Any

from .jsonapi import Answer, Checker, check_string_sizes, iso
from .jsonapi import problems_answer as problems
from .profile_checks import E164_PATTERN, EMAIL_PATTERN
from .state import Call

log = logging.getLogger(__name__)

JOB_TYPE = "data-privacy-deletion-job"
PROFILE_BASE = "/data/attributes/profile/data"
IDENTIFIERS = ("id", "email", "phone_number")


def handle(call: Call) -> Answer:
    """Check the request, delete whom it names, record it (202, no body)."""
    checker = Checker()
    asked = _check(checker, call.body)
    if not checker.problems:
        check_string_sizes(checker, call.body, call.raw)
    if checker.problems or asked is None:
        return problems(checker.problems)
    kind, value = asked
    state = call.state
    with state.lock:
        profile = state.profiles.find(kind, value)
        deleted: list[str] = []
        events = 0
        if profile is not None:
            deleted.append(profile.id)
            events = state.delete_profile(profile.id)
        state.deletions.append(
            {
                **dict.fromkeys(IDENTIFIERS),
                kind: value,
                "deleted_profile_ids": deleted,
                "deleted_events": events,
                "received_at": iso(call.request.received_at),
            }
        )
        state.changed.notify_all()
    log.debug("deletion by %s: %d profile(s), %d event(s)", kind, len(deleted), events)
    return Answer(202)


def _check(checker: Checker, body: Any) -> tuple[str, str] | None:
    """(the identifier kind, its value), or None after recording why not."""
    attributes = checker.resource(body, JOB_TYPE)
    holder = checker.member(attributes, "profile", "/data/attributes", "object", required=True)
    data = checker.member(holder, "data", "/data/attributes/profile", "object", required=True)
    if data is None:
        return None
    before = len(checker.problems)
    checker.resource_type(data, "profile", PROFILE_BASE)
    profile_id = checker.member(data, "id", PROFILE_BASE, "string", required=False)
    attrs_base = f"{PROFILE_BASE}/attributes"
    attrs = checker.member(data, "attributes", PROFILE_BASE, "object", required=True)
    email = checker.member(attrs, "email", attrs_base, "string", required=False)
    phone = checker.member(attrs, "phone_number", attrs_base, "string", required=False)
    if email is not None and not EMAIL_PATTERN.match(email.strip()):
        checker.fail(f"{attrs_base}/email", f"Invalid email address: '{email[:64]}'.")
    if phone is not None and not E164_PATTERN.match(phone):
        checker.fail(
            f"{attrs_base}/phone_number",
            f"Invalid phone number format: '{phone[:32]}'. Use E.164, e.g. +15005550006.",
        )
    if profile_id is not None and not profile_id.strip():
        checker.fail(f"{PROFILE_BASE}/id", "'id' must not be empty.")
    if len(checker.problems) > before or attrs is None:
        return None
    given = [
        (kind, value)
        for kind, value in (("id", profile_id), ("email", email), ("phone_number", phone))
        if value
    ]
    if not given:
        checker.fail(PROFILE_BASE, "One profile identifier is required: id, email or phone_number.")
        return None
    if len(given) > 1:
        names = ", ".join(kind for kind, _ in given)
        checker.fail(
            PROFILE_BASE, f"Give only one profile identifier (id, email or phone_number): {names}."
        )
        return None
    kind, value = given[0]
    return kind, value.strip().lower() if kind == "email" else value
