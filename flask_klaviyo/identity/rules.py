"""The identity rules: what a profile keeps, when it names someone, and when it must wait.

Pure functions over mappings (no request, no Redis), so the visit, resolution and settling all
apply the same rules. Whatever a loader, ``identify()`` or our signed cookie says passes through
:func:`usable_identity`; an event whose profile :func:`needs_identity` is parked, not sent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .identifiers import (
    ATTACHING_KEYS,
    EMAIL_PATTERN,
    EXCHANGE_ID_PATTERN,
    IDENTIFY_KEYS,
    LEGACY_KEYS,
    PROFILE_KEYS,
    WHO_KEYS,
    normalize_phone,
)

if TYPE_CHECKING:
    from ..events import Event

__all__ = [
    "MAX_VALUE_CHARS",
    "needs_identity",
    "normalize_profile",
    "provisional",
    "same_person",
    "usable_identity",
    "with_identity",
]

MAX_VALUE_CHARS = 254  # the longest email address; no identity attribute needs more
# Placeholder identifier used to validate an anonymous event before it is parked.
_PROVISIONAL_KX = "flask-klaviyo.parked"
_ABSENT = object()


def normalize_profile(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """Keep only known, non-empty attributes; tolerate the legacy ``$email`` spelling.

    A phone number that is not E.164 is left out rather than sent: Klaviyo would reject the
    whole event for it, and the email alone still identifies the shopper.
    """
    if not raw:
        return {}
    profile: dict[str, Any] = {}
    for key in PROFILE_KEYS:
        value = raw.get(key, _ABSENT)
        if value is _ABSENT:
            value = raw.get(LEGACY_KEYS[key])
        if value is None or value == "":
            continue
        value = str(value).strip()
        if key == "email":
            value = value.lower()
        if key == "phone_number":
            value = normalize_phone(value) or ""
        if value:
            profile[key] = value
    return profile


def usable_identity(raw: Any, keys: Sequence[str] = IDENTIFY_KEYS) -> dict[str, str]:
    """A visitor's identity from a loader, ``identify()`` or our cookie: only usable values.

    An invalid email is dropped, ``external_id`` is kept only beside an email or phone number
    (alone it would create a permanent duplicate profile), and an identity without an
    identifier Klaviyo can attach events to is no identity: {}.
    """
    if not isinstance(raw, Mapping):
        return {}
    profile = {
        key: value
        for key, value in normalize_profile(raw).items()
        if key in keys and len(value) <= MAX_VALUE_CHARS
    }
    if "email" in profile and not EMAIL_PATTERN.match(profile["email"]):
        del profile["email"]
    if "_kx" in profile and not EXCHANGE_ID_PATTERN.match(profile["_kx"]):
        del profile["_kx"]
    if "email" not in profile and "phone_number" not in profile:
        profile.pop("external_id", None)
    if "email" not in profile and "phone_number" not in profile and "_kx" not in profile:
        return {}
    return profile


def needs_identity(profile: Mapping[str, Any]) -> bool:
    """True for a profile Klaviyo could only file as an orphan: park it, don't send it."""
    for key in ATTACHING_KEYS:
        value = profile.get(key)
        if value is not None and value != "":
            return False
    return True


def provisional(event: Event) -> Event:
    """``event`` with a placeholder identifier, to validate everything else before parking."""
    return dataclasses.replace(event, profile={**event.profile, "_kx": _PROVISIONAL_KX})


def with_identity(event: Event, known: Mapping[str, Any], anonymous_id: str | None) -> Event:
    """A parked event under the now-known profile, plus its anonymous id so Klaviyo merges."""
    profile = {k: v for k, v in event.profile.items() if k not in WHO_KEYS}
    profile.update(known)
    if anonymous_id:
        profile["anonymous_id"] = anonymous_id
    return dataclasses.replace(event, profile=profile)


def same_person(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two identities share an email (else a phone number): then they may be merged."""
    for key in ("email", "phone_number"):
        if a.get(key) and b.get(key):
            return bool(a[key] == b[key])
    return False
