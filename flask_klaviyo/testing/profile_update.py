"""Update Profile (``PATCH /api/profiles/{id}``): change an existing profile, identifiers too.

This is how Klaviyo's "Updated Email" procedure keeps one profile: the profile the id names
takes the new email (or phone number, external id) and keeps its events, consent and id.
A field sent as null is cleared, a field left out is left alone; ``properties`` and
``location`` merge key by key; ``meta.patch_properties`` applies. Answers: 200 with the profile
(``additional-fields[profile]=subscriptions`` adds its consent), 404 for an unknown id, 409
``duplicate_profile`` when the new identifier already belongs to another profile, 400 when the
body's id is not the URL's or the change would leave the profile with no identifier.
``meta.patch_identifiers`` (secondary emails) is checked and otherwise ignored.
"""

from __future__ import annotations

import logging

from .jsonapi import (
    Answer,
    Checker,
    check_string_sizes,
    document_answer,
    error_answer,
    error_object,
    one_error,
    problems_answer,
)
from .profile_checks import check_profile_fields
from .profile_import import check_meta, duplicate_answer, profile_document
from .profiles import SINGLE_VALUED, ProfileConflict
from .state import Call

log = logging.getLogger(__name__)

ADDITIONAL_FIELDS = "additional-fields[profile]"
KNOWN_ADDITIONAL = ("subscriptions", "predictive_analytics")


def handle(call: Call) -> Answer:
    """Check the partial profile, apply it to the profile the URL names, answer it (200)."""
    path_id = call.params["id"]
    checker = Checker()
    body = call.body
    data = attributes = None
    if not isinstance(body, dict):
        checker.fail("/data", "The body must be a JSON object.")
    else:
        data = checker.member(body, "data", "", "object", required=True)
    if data is not None:
        checker.resource_type(data, "profile", "/data")
        body_id = checker.member(data, "id", "/data", "string", required=True)
        if body_id is not None and body_id != path_id:
            checker.fail(
                "/data/id",
                f"'id' ({body_id[:64]}) must be the id of the profile in the URL ({path_id[:64]}).",
            )
        attributes = checker.member(data, "attributes", "/data", "object", required=True)
        if attributes is not None:
            check_profile_fields(checker, attributes, "/data/attributes")
        meta = check_meta(checker, data, "/data")
        identifiers = (meta or {}).get("patch_identifiers")
        if identifiers is not None and not isinstance(identifiers, dict):
            checker.fail("/data/meta/patch_identifiers", "'patch_identifiers' must be an object.")
        for key in ("append", "unappend"):
            checker.member(
                identifiers if isinstance(identifiers, dict) else None,
                key,
                "/data/meta/patch_identifiers",
                "object",
                required=False,
            )
    extra = _additional_fields(call.request.query.get(ADDITIONAL_FIELDS))
    if isinstance(extra, Answer):
        return extra
    if not checker.problems:
        check_string_sizes(checker, body, call.raw)
    if checker.problems or data is None or attributes is None:
        return problems_answer(checker.problems)
    state = call.state
    with state.lock:
        profile = state.profiles.current(path_id)
        if profile is None:
            return error_answer(
                404, [error_object(404, detail="No profile with this id.", pointer="/data/id")]
            )
        left = {
            kind: attributes[kind] if kind in attributes else getattr(profile, kind)
            for kind in SINGLE_VALUED
        }
        if not any(left.values()) and not profile.anonymous_ids:
            checker.fail(
                "/data/attributes",
                "A profile must keep an identifier: email, phone_number or external_id.",
            )
            return problems_answer(checker.problems)
        try:
            profile, _ = state.profiles.upsert(profile.id, attributes, data.get("meta"))
        except ProfileConflict as conflict:
            return duplicate_answer(conflict)
        document = profile_document(profile, call.base_url)
        if "subscriptions" in extra:
            subscriptions = state.subscriptions.profile_subscriptions(profile.id)
            document["data"]["attributes"]["subscriptions"] = subscriptions
        state.changed.notify_all()
    log.debug("profile %s updated", profile.id)
    return document_answer(200, document)


def _additional_fields(value: str | None) -> list[str] | Answer:
    """``additional-fields[profile]=subscriptions,predictive_analytics`` (comma-separated);
    an unknown name is a 400 naming the parameter."""
    fields = [name.strip() for name in (value or "").split(",") if name.strip()]
    for name in fields:
        if name not in KNOWN_ADDITIONAL:
            return one_error(
                400,
                detail=f"'{name[:40]}' is not a valid field for the resource 'profile': use "
                f"{' or '.join(KNOWN_ADDITIONAL)}.",
                parameter=ADDITIONAL_FIELDS,
            )
    return fields
