"""Resolution: which profile an event belongs to, and whether the visitor allows browse tracking.

Order of trust (first found wins):

1. the event's own identity (an order's email, ``profile=``),
2. the merchant's ``identity_loader`` (the logged-in user),
3. what ``klaviyo.identify(...)`` established, now or in an earlier request: the extension's
   signed first-party cookie (or the same token in the ``KLAVIYO_ID_HEADER`` request header),
4. a ``_kx`` from a Klaviyo email link (``?_kx=`` on any landing URL; kept in the signed cookie
   for later visits), else the ``$exchange_id`` of Klaviyo's ``__kla_id`` cookie (or header),
5. anonymous: {} here; the event is parked after the response (``settle``).

Without consent (the ``consent_loader`` says False, or Klaviyo's ``__kla_off`` cookie) the
identity cookies are not used; the identity loader and ``identify()`` still name the visitor.
The merchant's loaders run under the one strict/lenient rule: a crash never breaks the page.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flask import g, has_request_context, request

from .._state import tolerate
from .cookies import KLA_OFF_COOKIE
from .identifiers import LOADER_KEYS
from .rules import normalize_profile, usable_identity
from .visit import current_visit

__all__ = [
    "ConsentLoader",
    "IdentityLoader",
    "browse_allowed",
    "forget_visitor",
    "resolve_profile",
    "visitor_profile",
]

IdentityLoader = Callable[[], Mapping[str, Any] | None]
ConsentLoader = Callable[[], bool | None]

_VISITOR_KEY = "_klaviyo_visitor"  # in g: the visitor's profile, computed once per request


def _call(loader: Callable[[], Any], what: str, failed: Any) -> Any:
    """Run a merchant callback; outside strict mode a crash is logged and ``failed`` returned."""
    try:
        return loader()
    except Exception:
        # ``what`` in the message itself, so the count says which callback failed.
        tolerate(f"the {what} raised; going on without it")
        return failed


def browse_allowed(loader: ConsentLoader | None) -> bool:
    """Browse tracking and identity cookies: not when the shopper said no (or ``__kla_off``).

    A consent loader that raises counts as "no" (outside strict mode, where it raises).
    """
    if not has_request_context():
        return True
    cookies = request.cookies
    # Werkzeug's get() raises and catches a KeyError for a missing key: check first.
    if KLA_OFF_COOKIE in cookies and cookies[KLA_OFF_COOKIE]:  # noqa: RUF019
        return False
    if loader is None:
        return True
    return _call(loader, "consent_loader", False) is not False


def visitor_profile(
    loader: IdentityLoader | None, consent_loader: ConsentLoader | None = None
) -> dict[str, Any]:
    """Who the current visitor is, as far as the server knows ({} for a stranger).

    Computed once per request (``identify()`` recomputes it). No anonymous id: a stranger is {}.
    """
    if not has_request_context():
        return {}
    cached = g.get(_VISITOR_KEY)
    if cached is not None:
        return dict(cached)
    profile: dict[str, Any] = {}
    if loader is not None:
        profile = usable_identity(_call(loader, "identity_loader", None), LOADER_KEYS)
    if not profile:
        visit = current_visit()
        if visit.identified:
            profile = dict(visit.identified)
        elif browse_allowed(consent_loader):
            if visit.profile:
                profile = dict(visit.profile)
            elif visit.kx:
                profile = {"_kx": visit.kx}
            elif visit.exchange_id:
                profile = {"_kx": visit.exchange_id}
    setattr(g, _VISITOR_KEY, profile)
    return dict(profile)


def forget_visitor() -> None:
    """Drop this request's cached visitor: ``identify()`` or a login in the view changed it."""
    g.pop(_VISITOR_KEY, None)


def resolve_profile(
    explicit: Mapping[str, Any] | None,
    loader: IdentityLoader | None,
    consent_loader: ConsentLoader | None = None,
) -> dict[str, Any]:
    """The profile an event belongs to: its own identity first, then the visitor's."""
    profile = normalize_profile(explicit) if explicit else {}
    if "email" in profile or "phone_number" in profile or "_kx" in profile:
        return profile
    if has_request_context():
        visitor = visitor_profile(loader, consent_loader)
        for key, value in visitor.items():
            profile.setdefault(key, value)
    return profile
