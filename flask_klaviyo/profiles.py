"""Customer data: what ``klaviyo.update_profile(...)`` and ``klaviyo.change_email(...)`` queue.

A profile update names the person by email or E.164 phone number; ``external_id`` rides along
but never alone (an id-only profile is a permanent duplicate in Klaviyo). Values are checked
here, before anything is queued, with Klaviyo's field names in the error. Updates of one person
that wait together are merged into one request (the ``profile_import`` kind coalesces by key).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from .delivery.profile_kinds import EMAIL_CHANGE, PROFILE_IMPORT
from .exceptions import KlaviyoSchemaError
from .identity.identifiers import (
    EMAIL_PATTERN,
    LOCATION_COORDINATE_KEYS,
    LOCATION_STRING_KEYS,
    normalize_phone,
)
from .models import Address

__all__ = ["EMAIL_CHANGE", "PROFILE_IMPORT", "email_change", "location_of", "profile_import"]

SUBJECT = "profile"  # the "metric" an error names
MAX_TEXT = 255  # Klaviyo's profile text fields; longer values are refused, not cut


def email_of(value: Any, field: str = "email") -> str:
    """A valid email address, lower-cased; KlaviyoSchemaError naming ``field`` otherwise."""
    if not isinstance(value, str) or not EMAIL_PATTERN.match(value.strip()):
        raise KlaviyoSchemaError(SUBJECT, field, f"must be an email address, got {value!r}")
    email = value.strip().lower()
    if len(email) > MAX_TEXT:
        raise KlaviyoSchemaError(SUBJECT, field, f"longer than {MAX_TEXT} characters")
    return email


def phone_of(value: Any, field: str = "phone_number") -> str:
    """An E.164 phone number (separators removed); KlaviyoSchemaError otherwise."""
    phone = normalize_phone(value) if isinstance(value, str | int) else None
    if phone is None:
        raise KlaviyoSchemaError(
            SUBJECT, field, f"must be an E.164 number with its country code, got {value!r}"
        )
    return phone


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise KlaviyoSchemaError(SUBJECT, field, f"must be non-empty text, got {value!r}")
    if len(value) > MAX_TEXT:
        raise KlaviyoSchemaError(SUBJECT, field, f"longer than {MAX_TEXT} characters")
    return value.strip()


def _location(location: Any) -> dict[str, Any]:
    if not isinstance(location, Mapping):
        raise KlaviyoSchemaError(SUBJECT, "location", "must be a mapping")
    clean: dict[str, Any] = {}
    for key, value in location.items():
        if value is None or value == "":
            continue
        if key in LOCATION_STRING_KEYS:
            clean[key] = _text(value, f"location.{key}")
        elif key in LOCATION_COORDINATE_KEYS:
            if isinstance(value, bool) or not isinstance(value, int | float) or math.isinf(value):
                raise KlaviyoSchemaError(SUBJECT, f"location.{key}", "must be a number")
            clean[key] = value
        else:
            known = ", ".join((*LOCATION_STRING_KEYS, *LOCATION_COORDINATE_KEYS))
            raise KlaviyoSchemaError(SUBJECT, f"location.{key}", f"unknown; known: {known}")
    return clean


def _properties(properties: Any) -> dict[str, Any]:
    if not isinstance(properties, Mapping):
        raise KlaviyoSchemaError(SUBJECT, "properties", "must be a mapping")
    try:
        return json.loads(json.dumps(dict(properties), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise KlaviyoSchemaError(SUBJECT, "properties", f"must be JSON: {exc}") from None


def profile_import(
    *,
    email: Any = None,
    phone_number: Any = None,
    external_id: Any = None,
    first_name: Any = None,
    last_name: Any = None,
    location: Any = None,
    properties: Any = None,
) -> tuple[dict[str, Any], str]:
    """The ``profile_import`` payload and its coalescing key (the email, else the phone)."""
    attributes: dict[str, Any] = {}
    if email is not None:
        attributes["email"] = email_of(email)
    if phone_number is not None:
        attributes["phone_number"] = phone_of(phone_number)
    if "email" not in attributes and "phone_number" not in attributes:
        raise KlaviyoSchemaError(
            SUBJECT,
            "email",
            "an email or phone_number is required (external_id alone would create a "
            "duplicate profile that never merges)",
        )
    if external_id is not None:
        attributes["external_id"] = _text(str(external_id), "external_id")
    for field, value in (("first_name", first_name), ("last_name", last_name)):
        if value is not None:
            attributes[field] = _text(value, field)
    if location:
        attributes["location"] = _location(location)
    if properties:
        attributes["properties"] = _properties(properties)
    key = attributes.get("email") or attributes["phone_number"]
    return {"attributes": attributes}, key


def location_of(address: Address | None) -> dict[str, Any]:
    """An order's billing address as a profile's location (Klaviyo's location keys)."""
    if address is None:
        return {}
    location = {
        "address1": address.address1,
        "address2": address.address2,
        "city": address.city,
        "region": address.region or address.region_code,
        "zip": address.zip,
        "country": address.country or address.country_code,
    }
    return {key: str(value) for key, value in location.items() if value not in (None, "")}


def email_change(old_email: Any, new_email: Any) -> tuple[dict[str, Any], str]:
    """The ``email_change`` payload: Klaviyo's Updated Email procedure, keyed by the old one."""
    old, new = email_of(old_email, "old_email"), email_of(new_email, "new_email")
    if old == new:
        raise KlaviyoSchemaError(SUBJECT, "new_email", "is the current email")
    return {"old_email": old, "new_email": new}, old
