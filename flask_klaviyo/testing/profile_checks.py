"""The profile resource check shared by events, profile import and bulk profile import.

The stand-in is an independent oracle of Klaviyo's behaviour: it deliberately keeps its own
email and E.164 checks here instead of importing the library's validation, so a bug in the
library's rules shows up as a disagreement in the tests instead of being copied into both.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from .jsonapi import Checker, has_type

log = logging.getLogger(__name__)

# Klaviyo's own rules, written independently of flask_klaviyo's (see the module docstring).
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
E164_PATTERN = re.compile(r"^\+[1-9]\d{6,14}$")

# Identifiers in the order Klaviyo trusts them when they point at different profiles.
IDENTIFIER_PRIORITY = ("id", "email", "phone_number", "external_id", "_kx", "anonymous_id")
NAMING_ORDER = ("id", "email", "phone_number", "external_id", "anonymous_id", "_kx")  # in errors
# What Create or Update Profile (and a bulk import) accepts as "who": no anonymous ids there.
UPSERT_IDENTIFIERS = ("id", "email", "phone_number", "external_id")
PROFILE_STRING_FIELDS = (
    "email",
    "phone_number",
    "external_id",
    "anonymous_id",
    "_kx",
    "first_name",
    "last_name",
    "organization",
    "locale",
    "title",
    "image",
)
LOCATION_STRING_FIELDS = (
    "address1",
    "address2",
    "city",
    "country",
    "region",
    "zip",
    "timezone",
    "ip",
)
LOCATION_COORDINATES = ("latitude", "longitude")

Identified = tuple[dict[str, Any], list[tuple[str, str]]]  # (what was sent, identifiers)


def check_profile_data(
    checker: Checker,
    data: dict[str, Any] | None,
    data_base: str,
    *,
    kinds: tuple[str, ...] = IDENTIFIER_PRIORITY,
) -> Identified | None:
    """A ``profile`` resource with at least one identifier among ``kinds``.

    Returns what was sent (attributes plus ``id``; nulls dropped) and the identifiers in trust
    order (emails lower-cased), or None after recording every problem with its pointer.
    """
    if data is None:
        return None
    before = len(checker.problems)
    checker.resource_type(data, "profile", data_base)
    profile_id = checker.member(data, "id", data_base, "string", required=False)
    checker.member(data, "meta", data_base, "object", required=False)
    pattrs = checker.member(data, "attributes", data_base, "object", required=True)
    if pattrs is None:
        return None
    attrs_base = f"{data_base}/attributes"
    check_profile_fields(checker, pattrs, attrs_base)
    if len(checker.problems) > before:
        return None

    sent = {key: value for key, value in pattrs.items() if value is not None}
    if profile_id:
        sent["id"] = profile_id
    identifiers: list[tuple[str, str]] = []
    for kind in kinds:
        value = sent.get(kind)
        if isinstance(value, str) and value.strip():
            identifiers.append((kind, value.strip().lower() if kind == "email" else value))
    if not identifiers:
        named = [kind for kind in NAMING_ORDER if kind in kinds]
        names = ", ".join(named[:-1]) + f" or {named[-1]}"
        checker.fail(attrs_base, f"A profile identifier is required: one of {names}.")
        return None
    return sent, identifiers


def check_profile_fields(checker: Checker, pattrs: dict[str, Any], attrs_base: str) -> None:
    """Types of every known attribute, then the email and E.164 phone formats."""
    for key in PROFILE_STRING_FIELDS:
        checker.member(pattrs, key, attrs_base, "string", required=False)
    for key in ("properties", "meta"):
        checker.member(pattrs, key, attrs_base, "object", required=False)
    location = checker.member(pattrs, "location", attrs_base, "object", required=False)
    for key in LOCATION_STRING_FIELDS:
        checker.member(location, key, f"{attrs_base}/location", "string", required=False)
    for key in LOCATION_COORDINATES:
        coordinate = (location or {}).get(key)
        if coordinate is not None and not has_type(coordinate, "string"):
            checker.member(location, key, f"{attrs_base}/location", "number", required=False)

    email = pattrs.get("email")
    if isinstance(email, str) and email and not EMAIL_PATTERN.match(email.strip()):
        checker.fail(f"{attrs_base}/email", f"Invalid email address: '{email[:64]}'.")
    phone = pattrs.get("phone_number")
    if isinstance(phone, str) and phone and not E164_PATTERN.match(phone):
        checker.fail(
            f"{attrs_base}/phone_number",
            f"Invalid phone number format: '{phone[:32]}'. Use E.164, e.g. +15005550006.",
        )
