"""The visit: what this request knows about its visitor, read once from cookies, header and URL.

A :class:`Visit` lives in ``g`` for the request. It is read lazily (:func:`current_visit`) so a
request that tracks nothing pays nothing, and :func:`has_identity_input` lets the after-request
hook skip identity entirely when there is nothing to read. What the visit learns is written back
after the response (``settle``); an unusable cookie marks it ``stale``, never an error page.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from flask import current_app, g, request

from .cookies import KLA_ID_COOKIE, exchange_id, parse_kla_id, read_token
from .rules import usable_identity

__all__ = ["Visit", "current_visit", "has_identity_input", "new_anonymous_id"]

_VISIT_KEY = "_klaviyo_visit"  # in g
_ANONYMOUS_ID = re.compile(r"^[0-9a-f]{32}$")


def new_anonymous_id() -> str:
    """A fresh anonymous id, in the only form a signed token is read back with."""
    return uuid.uuid4().hex


@dataclass
class Visit:
    """The visitor as this request sees it (one per request, in ``g``)."""

    anonymous_id: str | None = None
    kx: str | None = None  # a _kx from a landing URL, now or earlier (signed cookie)
    profile: dict[str, str] = field(default_factory=dict)  # from the signed cookie
    parked: int = 0  # events parked under anonymous_id (a hint: saves a Redis lookup)
    identified: dict[str, str] | None = None  # identify() during this request
    exchange_id: str | None = None  # __kla_id's $exchange_id (cookie or header)
    kla: dict[str, Any] | None = None  # __kla_id as klaviyo.js wrote it (kept when re-set)
    header: bool = False  # the identity came in (or may go back in) KLAVIYO_ID_HEADER
    landed: bool = False  # a new _kx arrived with this request
    changed: bool = False  # the signed token must be written
    stale: bool = False  # our cookie was present but unusable
    kla_changed: bool = False  # __kla_id must be re-set
    started: int | None = None  # when this visit began (unix seconds; Active on Site)
    seen: int | None = None  # the last page of this visit (refreshed at most once a minute)

    def state(self) -> dict[str, Any]:
        """What the signed token holds (short keys: it travels with every request)."""
        data: dict[str, Any] = {}
        if self.anonymous_id:
            data["a"] = self.anonymous_id
        if self.kx:
            data["k"] = self.kx
        profile = self.identified if self.identified is not None else self.profile
        if profile:
            data["p"] = profile
        if self.parked:
            data["n"] = self.parked
        if self.started is not None and self.seen is not None:
            data["v"] = [self.started, self.seen]
        return data


def _from_token(raw: str) -> Visit | None:
    """The visit a signed token describes (each field checked); None when it is not ours."""
    read = read_token(raw)
    if read is None:
        return None
    data, refresh = read
    visit = Visit()
    anonymous_id = data.get("a")
    if isinstance(anonymous_id, str) and _ANONYMOUS_ID.match(anonymous_id):
        visit.anonymous_id = anonymous_id
    visit.kx = exchange_id(data.get("k"))
    visit.profile = usable_identity(data.get("p"))
    parked = data.get("n")
    if isinstance(parked, int) and not isinstance(parked, bool) and parked > 0:
        visit.parked = parked
    times = data.get("v")
    if (
        isinstance(times, list)
        and len(times) == 2
        and all(type(t) is int and t > 0 for t in times)
        and times[0] <= times[1]
    ):
        visit.started, visit.seen = times
    if refresh:
        visit.changed = True
    return visit


def _get(values: Any, key: str) -> Any:
    """``values.get(key)`` without Werkzeug's cost for a missing key (it raises and catches a
    BadRequestKeyError inside ``get``): most of these are missing on most pages."""
    return values.get(key) if key in values else None


def _load_visit() -> Visit:
    config = current_app.config
    header_name = config["KLAVIYO_ID_HEADER"]
    header = _get(request.headers, header_name) if header_name else None
    cookies = request.cookies
    token = _get(cookies, config["KLAVIYO_COOKIE_NAME"])
    visit: Visit | None = None
    header_is_token = False
    if token is not None:
        visit = _from_token(token) or Visit(stale=True)
    elif header:
        visit = _from_token(header)
        header_is_token = visit is not None
    if visit is None:
        visit = Visit()
    visit.header = header is not None
    kla = parse_kla_id(_get(cookies, KLA_ID_COOKIE))
    if kla is None and header and not header_is_token:
        kla = parse_kla_id(header)
    if kla is not None:
        visit.kla = kla
        visit.exchange_id = exchange_id(kla.get("$exchange_id"))
    landing = exchange_id(_get(request.args, "_kx"))  # request.args is URL-decoded already
    if landing is not None:
        visit.landed = True
        if landing != visit.kx:
            visit.kx = landing
            visit.changed = True
        if visit.exchange_id != landing:
            visit.kla_changed = True
    return visit


def current_visit() -> Visit:
    """This request's :class:`Visit`, read once from the cookies, header and URL."""
    visit: Visit | None = g.get(_VISIT_KEY)
    if visit is None:
        visit = _load_visit()
        setattr(g, _VISIT_KEY, visit)
    return visit


def has_identity_input() -> bool:
    """Cheap check for the after-request hook: is there anything identity could have to do?"""
    if _VISIT_KEY in g:
        return True
    config = current_app.config
    header_name = config["KLAVIYO_ID_HEADER"]
    return (
        config["KLAVIYO_COOKIE_NAME"] in request.cookies
        or "_kx" in request.args
        or bool(header_name and header_name in request.headers)
    )
