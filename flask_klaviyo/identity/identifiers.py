"""Profile attributes and identifiers: the one table every part of the extension reads.

Klaviyo attaches an event to a profile by an identifier. Some identifiers name a person on their
own (``email``, ``phone_number``, ``_kx``), one is Klaviyo's own profile ``id``, and two do not:
``external_id`` alone creates a permanent duplicate profile, ``anonymous_id`` alone an orphan.
Every group below is a view of that table; the order of each group is fixed (profile keys and
grouping are computed by walking it).

This module is a leaf (standard library only) so events, delivery and the bridge can import it
without importing the request side of identity.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "ATTACHING_KEYS",
    "E164_PATTERN",
    "EMAIL_PATTERN",
    "EXCHANGE_ID_PATTERN",
    "IDENTIFIER_KEYS",
    "IDENTIFY_KEYS",
    "LEGACY_KEYS",
    "LOADER_KEYS",
    "LOCATION_COORDINATE_KEYS",
    "LOCATION_STRING_KEYS",
    "META_KEYS",
    "PERSON_IDENTIFIERS",
    "PROFILE_KEYS",
    "PROFILE_OBJECT_KEYS",
    "PROFILE_STRING_KEYS",
    "SENDABLE_IDENTIFIERS",
    "WHO_KEYS",
    "mask_email",
    "mask_phone",
    "mask_profile",
    "normalize_phone",
]

# -- the table -------------------------------------------------------------------------------
#   key            says who   Klaviyo attaches   names a person   identify()   legacy spelling
#   email          yes        yes                yes              yes          $email
#   phone_number   yes        yes                yes              yes          $phone_number
#   external_id    yes        with email/phone   no               yes          $external_id
#   _kx            yes        yes                yes              loader only  _kx
#   anonymous_id   yes        no (orphan)        no               no           $anonymous_id
#   id             yes        yes (Klaviyo's)    no               no           -
#   first_name, last_name: attributes identify() and the cookie keep; organization, locale,
#   title, image: other string attributes of Klaviyo's profile object.

# Identifiers Klaviyo can attach an event to without creating an orphan profile.
SENDABLE_IDENTIFIERS = ("email", "phone_number", "_kx", "id")
# A profile carrying one of these is attached to someone (external_id: the merchant's own id).
ATTACHING_KEYS = (*SENDABLE_IDENTIFIERS, "external_id")
# Identifiers that name a person on their own (the bridge identifies / shares only these).
PERSON_IDENTIFIERS = ("email", "phone_number", "_kx")
# Every identifier; the profile key of an event walks them in this order.
IDENTIFIER_KEYS = ("email", "phone_number", "external_id", "anonymous_id", "_kx", "id")
# Attributes that say who a profile is: replaced as a whole when a parked event is released.
WHO_KEYS = ("email", "phone_number", "external_id", "_kx", "anonymous_id", "id")
# The profile attributes an event may carry from identity (Klaviyo's names).
PROFILE_KEYS = (
    "email",
    "phone_number",
    "external_id",
    "_kx",
    "anonymous_id",
    "first_name",
    "last_name",
)
# The legacy Track API spelling of each (``$email``); ``_kx`` has none.
LEGACY_KEYS = {key: "_kx" if key == "_kx" else "$" + key.lstrip("_") for key in PROFILE_KEYS}
# What ``klaviyo.identify(...)`` accepts, the signed cookie remembers, klaviyo.identify() gets.
IDENTIFY_KEYS = ("email", "phone_number", "external_id", "first_name", "last_name")
# What an identity loader may name (identify()'s keys, plus a _kx the store kept itself).
LOADER_KEYS = (*IDENTIFY_KEYS, "_kx")

# Klaviyo's profile object (Create Event's ``profile.data.attributes``).
PROFILE_STRING_KEYS = (
    *IDENTIFIER_KEYS,
    "first_name",
    "last_name",
    "organization",
    "locale",
    "title",
    "image",
)
PROFILE_OBJECT_KEYS = ("location", "properties", "meta")
LOCATION_STRING_KEYS = (
    "address1",
    "address2",
    "city",
    "country",
    "region",
    "zip",
    "timezone",
    "ip",
)
LOCATION_COORDINATE_KEYS = ("latitude", "longitude")
META_KEYS = ("patch_properties", "patch_identifiers")

# -- normalisation -----------------------------------------------------------------------------
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
E164_PATTERN = re.compile(r"^\+[1-9]\d{6,14}$")  # "+" and 7 to 15 digits
# A Klaviyo exchange id (``_kx``, ``__kla_id``'s ``$exchange_id``) is opaque (base64 and the
# company id); refuse whitespace, controls and the characters that cannot live in a cookie value.
EXCHANGE_ID_PATTERN = re.compile(r'^[^\s\x00-\x1f\x7f;,"\\]{1,256}$')
_PHONE_SEPARATORS = re.compile(r"[\s().\-/]")


def normalize_phone(value: Any) -> str | None:
    """An E.164 number (``+`` and 7 to 15 digits), separators removed; ``00`` read as ``+``.

    A number without its country code is not guessed at: None.
    """
    if value is None:
        return None
    text = _PHONE_SEPARATORS.sub("", str(value).strip())
    if text.startswith("00"):
        text = "+" + text[2:]
    return text if E164_PATTERN.match(text) else None


# -- masking for log lines ---------------------------------------------------------------------
VISIBLE_PHONE_DIGITS = 4
MASK = "***"


def mask_email(email: Any) -> str:
    """``john@test.com`` -> ``j***@test.com``: enough to tell shoppers apart in a log."""
    if not isinstance(email, str) or "@" not in email:
        return MASK
    local, _, domain = email.rpartition("@")
    return f"{local[:1]}{MASK}@{domain}"


def mask_phone(phone: Any) -> str:
    """``+15551234567`` -> ``+1******4567``."""
    if not isinstance(phone, str):
        return MASK
    digits = phone.lstrip("+")
    if len(digits) <= VISIBLE_PHONE_DIGITS + 1:
        return MASK
    hidden = "*" * (len(digits) - VISIBLE_PHONE_DIGITS - 1)
    prefix = "+" if phone.startswith("+") else ""
    return f"{prefix}{digits[0]}{hidden}{digits[-VISIBLE_PHONE_DIGITS:]}"


def mask_profile(profile: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy safe for log lines: contact details and names masked, opaque ids kept."""
    masked: dict[str, Any] = {}
    for key, value in (profile or {}).items():
        if value is None:
            continue
        if key == "email":
            masked[key] = mask_email(value)
        elif key == "phone_number":
            masked[key] = mask_phone(value)
        elif key in ("first_name", "last_name") and isinstance(value, str):
            masked[key] = f"{value[:1]}{MASK}"
        elif key == "_kx" and isinstance(value, str):
            masked[key] = f"{value[:4]}{MASK}"
        elif key in ("location", "properties", "meta", "image"):
            masked[key] = MASK
        else:
            masked[key] = value
    return masked
