"""Profile kinds: Create or Update Profile (coalesced per profile; Klaviyo's profile id
remembered; a 409 conflict falls back to the email), Update Profile, and the email change.

Klaviyo keys a profile by email: changing the address with a profile import would create a
second profile. Its "Updated Email" procedure changes the identifier on the existing profile by
its id (``PATCH /api/profiles/{id}``); the id is what an earlier import answered (kept in Redis
by email), or, when this process never saw one, what an import of the old address answers.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ..exceptions import KlaviyoClientError
from ..identity.identifiers import mask_email, mask_phone
from . import keys
from .forgetting import forgotten_entries
from .kinds import Kind, Payload, get, register
from .operations import Operation

__all__ = ["PROFILE_IMPORT", "PROFILE_IMPORT_CHUNK", "remember_profile_id"]

log = logging.getLogger(__name__)

PROFILE_IMPORT = "profile_import"
PROFILE_UPDATE = "profile_update"
EMAIL_CHANGE = "email_change"
# Many profiles queued as one outbox entry (a backfill): ``{"profiles": [{"payload", "key"}]}``,
# sent as ``bulk_import_profiles`` operations, so a job holds up to Klaviyo's 10,000 (a drain
# reads at most 1,000 entries) and each profile a job refuses is its own dead letter.
PROFILE_IMPORT_CHUNK = "bulk_import_profiles_chunk"
BULK_IMPORT = "bulk_import_profiles"


def _one(resource: str, batch: Sequence[Payload]) -> dict[str, Any]:
    payload = batch[0]
    data: dict[str, Any] = {"type": resource, "attributes": dict(payload["attributes"])}
    if payload.get("id"):
        data["id"] = payload["id"]
    if payload.get("meta"):
        data["meta"] = payload["meta"]
    return {"data": data}


def _merge_profile(first: Payload, second: Payload) -> dict[str, Any]:
    """A later update wins field by field; ``location`` and ``properties`` merge key by key."""
    merged = {**first, **second}
    attributes = {**first.get("attributes", {}), **second.get("attributes", {})}
    for name in ("location", "properties"):
        old, new = first.get("attributes", {}).get(name), second.get("attributes", {}).get(name)
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            attributes[name] = {**old, **new}
    merged["attributes"] = attributes
    return merged


def _profile_id(answer: Any) -> str | None:
    data = answer.get("data") if isinstance(answer, Mapping) else None
    profile_id = data.get("id") if isinstance(data, Mapping) else None
    return profile_id if isinstance(profile_id, str) and profile_id else None


def remember_profile_id(payload: Payload, answer: Any, connection: Any) -> None:
    """Keep the id Klaviyo answered for this email (the email change needs it)."""
    email = payload.get("attributes", {}).get("email")
    profile_id = _profile_id(answer)
    if connection is not None and isinstance(email, str) and profile_id:
        connection.hset(keys.PROFILE_IDS, email.lower(), profile_id)


def _by_email(payload: Payload) -> dict[str, Any] | None:
    """After a 409 (email and phone belong to two profiles): update the email's profile."""
    attributes = dict(payload.get("attributes") or {})
    email, phone = attributes.get("email"), attributes.pop("phone_number", None)
    if not email or phone is None:
        return None
    log.warning(
        "klaviyo: %s and %s belong to two Klaviyo profiles; updating the email's profile "
        "without the phone number (the conflict is kept as a dead letter)",
        mask_email(email),
        mask_phone(phone),
    )
    return {**payload, "attributes": attributes}


def _send_email_change(sender: Any, kind: Kind, batch: Sequence[Operation]) -> None:
    """For each change: the profile's id (remembered, or an import of the old address), then
    ``PATCH /api/profiles/{id}`` with the new address."""
    for operation in batch:
        old, new = operation.payload["old_email"], operation.payload["new_email"]
        try:
            profile_id = _known_id(sender, old)
            body = {"data": {"type": "profile", "id": profile_id, "attributes": {"email": new}}}
            path = f"/api/profiles/{profile_id}"
            sender.call(kind.endpoint, functools.partial(sender.client.send, "PATCH", path, body))
        except KlaviyoClientError as exc:  # 409: the new address has a profile of its own
            errors = [e.to_dict() for e in exc.errors]
            sender.keep_dead(operation.to_dict(), "rejected", errors, exc.status_code)
            continue
        sender.sent += 1
        if sender.connection is not None:
            pipe = sender.connection.pipeline(transaction=False)
            pipe.hdel(keys.PROFILE_IDS, old.lower())
            pipe.hset(keys.PROFILE_IDS, new.lower(), profile_id)
            pipe.execute()


def _known_id(sender: Any, email: str) -> str:
    connection = sender.connection
    known = connection.hget(keys.PROFILE_IDS, email.lower()) if connection is not None else None
    if known:
        return str(known.decode() if isinstance(known, bytes) else known)
    body = {"data": {"type": "profile", "attributes": {"email": email}}}
    answer = sender.call(
        "create_or_update_profile",
        functools.partial(sender.client.send, "POST", "/api/profile-import", body),
    )
    profile_id = _profile_id(answer.data)
    if profile_id is None:
        raise KlaviyoClientError(502, [])
    remember_profile_id(body["data"], answer.data, connection)
    return profile_id


def _send_chunk(sender: Any, kind: Kind, batch: Sequence[Operation]) -> None:
    """Each chunk's profiles as Bulk Import Profiles operations (jobs followed up as usual)."""
    bulk = get(BULK_IMPORT)
    for chunk in batch:
        members = [
            Operation(BULK_IMPORT, dict(entry["payload"]), entry.get("key"), chunk.queued_at)
            for entry in chunk.payload.get("profiles") or ()
        ]
        # Someone forgotten while the chunk waited is dropped, as the drain drops entries.
        forgotten = forgotten_entries(sender.connection, [m.to_dict() for m in members])
        sender.send_operations(bulk, [m for i, m in enumerate(members) if i not in forgotten])


register(
    Kind(
        PROFILE_IMPORT_CHUNK,
        "bulk_import_profiles",
        "/api/profile-bulk-import-jobs",
        1,
        body=lambda batch: {},  # sent by _send_chunk, as bulk_import_profiles operations
        send=_send_chunk,
    )
)
register(
    Kind(
        PROFILE_IMPORT,
        "create_or_update_profile",
        "/api/profile-import",
        1,
        body=lambda batch: _one("profile", batch),
        merge=_merge_profile,
        answered=remember_profile_id,
        conflict=_by_email,
    )
)
register(
    Kind(
        PROFILE_UPDATE,
        "update_profile",
        "/api/profiles/{id}",
        1,
        body=lambda batch: _one("profile", batch),
        method="PATCH",
    )
)
register(
    Kind(
        EMAIL_CHANGE,
        "update_profile",
        "/api/profiles",
        1,
        body=lambda batch: {},
        send=_send_email_change,
    )
)
