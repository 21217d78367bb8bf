"""A customer of the store's history as operations: the profile through Bulk Import Profiles,
and, where the record holds when they consented, a historical subscription per channel
(``historical_import: true``: Klaviyo records the consent as given then, sends no opt-in email
and fires no "Added to list" flow).

Both are checked by the same code as ``klaviyo.update_profile`` and ``klaviyo.subscribe``
(:mod:`flask_klaviyo.profiles`, :mod:`flask_klaviyo.subscriptions`): the messages name the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..delivery.operations import Operation
from ..exceptions import KlaviyoSchemaError
from ..models.coerce import _pick
from ..profiles import profile_import
from ..subscriptions import subscribe_payload

__all__ = ["BULK_IMPORT", "CONSENT_FIELDS", "SUBSCRIBE", "profile_operations"]

BULK_IMPORT = "bulk_import_profiles"
SUBSCRIBE = "subscribe"
CONSENT_FIELDS = (("email_consent_at", "email"), ("sms_consent_at", "sms"))


def _mapping(record: Any, name: str) -> Mapping[str, Any] | None:
    value = _pick(record, (name,))
    if value is not None and not isinstance(value, Mapping):
        raise KlaviyoSchemaError("profile", name, "must be an object")
    return value


def profile_operations(
    record: Any, *, list_id: str | None = None, source: str | None = None
) -> list[Operation]:
    """The record's bulk import, then one historical subscription per channel with a consent
    time. ``list_id`` (or the record's own ``list_id``) is the list they subscribed to.

    Raises KlaviyoSchemaError naming the field when the record cannot be sent as it is.
    """
    payload, key = profile_import(
        email=_pick(record, ("email",)),
        phone_number=_pick(record, ("phone_number", "phone")),
        external_id=_pick(record, ("external_id",)),
        first_name=_pick(record, ("first_name",)),
        last_name=_pick(record, ("last_name",)),
        location=_mapping(record, "location"),
        properties=_mapping(record, "properties"),
    )
    operations = [Operation(BULK_IMPORT, payload, key)]
    attributes = payload["attributes"]
    target = _pick(record, ("list_id",)) or list_id
    for field, channel in CONSENT_FIELDS:
        consented_at = _pick(record, (field,))
        if consented_at is None:
            continue
        if target is None:
            raise KlaviyoSchemaError(
                "subscription", field, "a consent needs the list it was given for (--list-id)"
            )
        # Both identifiers on each: a subscription applied before the (asynchronous) import
        # must land on the same profile, not make a second one holding only the phone number.
        subscription, subscription_key = subscribe_payload(
            email=attributes.get("email"),
            phone_number=attributes.get("phone_number"),
            list_id=target,
            channels=(channel,),
            source=source,
            consented_at=consented_at,
        )
        operations.append(Operation(SUBSCRIBE, subscription, subscription_key))
    return operations
