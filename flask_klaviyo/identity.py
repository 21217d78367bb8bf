"""Who the visitor is, as a Klaviyo profile.

Order of trust (first found wins): the event's own identity (an order's email) > the merchant's
``identity_loader`` (the logged-in user) > what ``klaviyo.identify(...)`` established during this
request. The signed first-party cookie, ``_kx`` and ``__kla_id`` join this chain in the identity
issue; this module is where they go.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from flask import g, has_request_context, request

__all__ = [
    "PROFILE_KEYS",
    "ConsentLoader",
    "IdentityLoader",
    "browse_allowed",
    "normalize_profile",
    "resolve_profile",
    "visitor_profile",
]

IdentityLoader = Callable[[], Mapping[str, Any] | None]
ConsentLoader = Callable[[], bool | None]

# The profile attributes an event may carry (Klaviyo's names); anything else is dropped.
PROFILE_KEYS = (
    "email",
    "phone_number",
    "external_id",
    "_kx",
    "anonymous_id",
    "first_name",
    "last_name",
)
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


def normalize_profile(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """Keep only known, non-empty attributes; tolerate the legacy ``$email`` spelling.

    A phone number that is not E.164 is left out rather than sent: Klaviyo would reject the
    whole event for it, and the email alone still identifies the shopper.
    """
    if not raw:
        return {}
    profile: dict[str, Any] = {}
    for key in PROFILE_KEYS:
        value = raw.get(key, raw.get("$" + key.lstrip("_")) if key != "_kx" else raw.get("_kx"))
        if value is None or value == "":
            continue
        value = str(value).strip()
        if key == "email":
            value = value.lower()
        if key == "phone_number" and not _E164.match(value):
            continue
        if value:
            profile[key] = value
    return profile


def resolve_profile(
    explicit: Mapping[str, Any] | None, loader: IdentityLoader | None
) -> dict[str, Any]:
    """The profile an event belongs to: its own identity first, then the visitor's."""
    profile = normalize_profile(explicit)
    if profile.keys() & {"email", "phone_number", "_kx"}:
        return profile
    if has_request_context():
        visitor = visitor_profile(loader)
        for key, value in visitor.items():
            profile.setdefault(key, value)
    return profile


def visitor_profile(loader: IdentityLoader | None) -> dict[str, Any]:
    """The current visitor's profile, computed once per request."""
    cached = g.get("_klaviyo_visitor")
    if cached is not None:
        return dict(cached)
    profile: dict[str, Any] = {}
    if loader is not None:
        profile = normalize_profile(loader())
    identified = g.get("_klaviyo_identified")
    if not profile and identified:
        profile = dict(identified)
    g._klaviyo_visitor = profile
    return dict(profile)


def remember_identity(profile: Mapping[str, Any]) -> dict[str, Any]:
    """Record what ``klaviyo.identify`` learnt, for the rest of this request."""
    normalized = normalize_profile(profile)
    g._klaviyo_identified = normalized
    g.pop("_klaviyo_visitor", None)
    return normalized


def browse_allowed(loader: ConsentLoader | None) -> bool:
    """Browse tracking and identity cookies: not when the shopper said no (or ``__kla_off``)."""
    if not has_request_context():
        return True
    if request.cookies.get("__kla_off"):
        return False
    if loader is None:
        return True
    return loader() is not False
