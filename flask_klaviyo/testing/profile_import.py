"""Create or Update Profile (``POST /api/profile-import``): an upsert into the profile store.

Klaviyo matches on the id, else the email, phone number or external id; it answers 201 with
the profile when it created one and 200 when it updated one. A field sent as null is cleared,
a field left out is left alone; custom ``properties`` and ``location`` merge key by key.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from .jsonapi import (
    Answer,
    Checker,
    check_string_sizes,
    document_answer,
    error_answer,
    error_object,
    iso,
    problems_answer,
)
from .profile_checks import UPSERT_IDENTIFIERS, check_profile_data
from .profiles import Profile, ProfileConflict
from .state import Call

log = logging.getLogger(__name__)

SHOWN_ATTRIBUTES = (
    "first_name",
    "last_name",
    "organization",
    "locale",
    "title",
    "image",
    "location",
    "properties",
)


def check_meta(checker: Checker, data: dict[str, Any], base: str) -> dict[str, Any] | None:
    """``meta.patch_properties``: append / unappend objects, unset a key or a list of keys."""
    meta = checker.member(data, "meta", base, "object", required=False)
    patch = checker.member(meta, "patch_properties", f"{base}/meta", "object", required=False)
    patch_base = f"{base}/meta/patch_properties"
    for key in ("append", "unappend"):
        checker.member(patch, key, patch_base, "object", required=False)
    unset = (patch or {}).get("unset")
    if unset is not None and not (
        isinstance(unset, str)
        or (isinstance(unset, list) and all(isinstance(name, str) for name in unset))
    ):
        checker.fail(f"{patch_base}/unset", "'unset' must be a string or an array of strings.")
    return meta


def handle(call: Call) -> Answer:
    """Check the profile resource, upsert it, answer it (201 created, 200 updated)."""
    checker = Checker()
    body = call.body
    data = None
    if not isinstance(body, dict):
        checker.fail("/data", "The body must be a JSON object.")
    else:
        data = checker.member(body, "data", "", "object", required=True)
    checked = check_profile_data(checker, data, "/data", kinds=UPSERT_IDENTIFIERS)
    meta = check_meta(checker, data, "/data") if data is not None else None
    if not checker.problems:
        check_string_sizes(checker, body, call.raw)
    if checker.problems or checked is None or data is None:
        return problems_answer(checker.problems)
    state = call.state
    with state.lock:
        try:
            profile, created = state.profiles.upsert(data.get("id"), data["attributes"], meta)
        except LookupError:
            return error_answer(
                404, [error_object(404, detail="No profile with this id.", pointer="/data/id")]
            )
        except ProfileConflict as conflict:
            return duplicate_answer(conflict)
        document = profile_document(profile, call.base_url)
        state.changed.notify_all()
    return document_answer(201 if created else 200, document)


def duplicate_answer(conflict: ProfileConflict) -> Answer:
    """Klaviyo's 409: the identifier belongs to another profile, whose id ``meta`` names."""
    error = error_object(
        409,
        code="duplicate_profile",
        detail=str(conflict),
        pointer=f"/data/attributes/{conflict.kind}",
    )
    error["meta"] = {"duplicate_profile_id": conflict.owner}
    return error_answer(409, [error])


def profile_document(profile: Profile, base_url: str) -> dict[str, Any]:
    """PostProfileResponse: the profile resource as Klaviyo answers an upsert."""
    here = f"{base_url}/api/profiles/{profile.id}/"
    attributes: dict[str, Any] = {
        "email": profile.email,
        "phone_number": profile.phone_number,
        "external_id": profile.external_id,
    }
    for key in SHOWN_ATTRIBUTES:
        attributes[key] = copy.deepcopy(profile.attributes.get(key))
    attributes["properties"] = attributes["properties"] or {}
    if attributes["location"] is None:  # a nullable $ref: OAS 3.0 ignores the "nullable"
        del attributes["location"]
    attributes.update(created=iso(profile.created), updated=iso(profile.updated))
    attributes["last_event_date"] = None
    return {
        "data": {
            "type": "profile",
            "id": profile.id,
            "attributes": attributes,
            "links": {"self": here},
        },
        "links": {"self": here},
    }
