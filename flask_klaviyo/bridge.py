"""``{{ klaviyo_bridge() }}``: what the page needs to agree with the server.

The snippet is three tags and no inline JavaScript (a strict Content-Security-Policy needs only
``script-src 'self'`` plus klaviyo.js's origin):

1. ``<script type="application/json" id="klaviyo-bridge-data">``: the blob. ``mode``
   (``"drop"`` or ``"share"``), ``companyId`` (the public key) and ``events``, the events the
   server tracked while rendering this page (``metric`` + ``unique_id``). In share mode each event
   also carries the ``profile`` identifiers the server sent it with, plus ``clientUrl`` and
   ``revision`` for Klaviyo's client endpoint. ``identify`` holds the visitor the server knows,
   for ``klaviyo.identify`` (only with consent and a public key).
2. ``/_klaviyo/static/klaviyo-bridge.js``: defines the ``klaviyo`` object stub when nothing did,
   calls ``klaviyo.identify(identify)``, and wraps ``klaviyo.track`` / ``klaviyo.push`` /
   ``_learnq.push`` so a residual browser call for a metric the server already tracked is not
   counted twice (dropped, or in share mode re-sent with the server's ``unique_id``).
3. klaviyo.js for ``KLAVIYO_PUBLIC_API_KEY`` (``KLAVIYO_JS_URL``), only when consent allows.

The blob is HTML-safe JSON (``<``, ``>``, ``&`` and ``'`` escaped), so a product name or an email
holding ``</script>`` cannot leave its tag; the private key is never part of it. With
``KLAVIYO_ENABLED`` False only an inert blob is rendered (no events, no scripts).

It is on every page, so its script tags are built once per app (and script root, public key
and ``KLAVIYO_JS_URL``) and remembered; only the blob is made per page.
"""

from __future__ import annotations

import functools
import json
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from flask import Flask, current_app, g, request, url_for
from markupsafe import Markup, escape

from ._settings import DEFAULT_KLAVIYO_JS_URL
from .identity.identifiers import IDENTIFY_KEYS, PERSON_IDENTIFIERS, PROFILE_KEYS

if TYPE_CHECKING:
    from .extension import Klaviyo

__all__ = [
    "DATA_ELEMENT_ID",
    "DEFAULT_KLAVIYO_JS_URL",
    "KLAVIYO_JS_LOADED",
    "bridge_data",
    "identify_payload",
    "keep_private",
    "klaviyo_js_url",
    "render",
    "share_profile",
]

DATA_ELEMENT_ID = "klaviyo-bridge-data"
KLAVIYO_JS_LOADED = "_klaviyo_js_loaded"  # g: this page loads klaviyo.js

# What a shared client event's profile carries: the attributes the server's event used.
SHARE_KEYS = PROFILE_KEYS
IDENTIFIERS = PERSON_IDENTIFIERS
# The blob when KLAVIYO_ENABLED is False: no scripts, nothing tracked, nothing to act on.
INERT: dict[str, Any] = {"mode": "drop", "companyId": None, "events": []}


def identify_payload(visitor: Mapping[str, Any]) -> dict[str, str] | None:
    """What ``klaviyo.identify`` gets for this visitor, or None.

    Only a visitor known by email or phone number is identified. ``external_id`` rides along
    but never alone (an id-only profile is a permanent duplicate). A visitor known only by
    ``_kx`` is not identified here: klaviyo.js reads ``$exchange_id`` from its ``__kla_id``
    cookie, which the server keeps up to date.
    """
    if not (visitor.get("email") or visitor.get("phone_number")):
        return None
    return {key: str(visitor[key]) for key in IDENTIFY_KEYS if visitor.get(key)}


def share_profile(profile: Mapping[str, Any]) -> dict[str, str] | None:
    """The identifiers a shared client event is sent with, or None when it must not be sent.

    An event the server holds for an anonymous visitor (no email, phone or ``_kx``) is not
    shared: a client event under ``anonymous_id`` alone would be an orphan profile.
    """
    if not any(profile.get(key) for key in IDENTIFIERS):
        return None
    shared = {key: str(profile[key]) for key in SHARE_KEYS if profile.get(key)}
    if not (shared.get("email") or shared.get("phone_number")):
        shared.pop("external_id", None)
    return shared


def klaviyo_js_url(base: str, company_id: str) -> str:
    """``KLAVIYO_JS_URL`` with ``company_id`` in its query string."""
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}{urlencode({'company_id': company_id})}"


def bridge_data(extension: Klaviyo, *, consent: bool | None = None) -> dict[str, Any]:
    """The blob ``klaviyo-bridge.js`` reads (see the module docstring)."""
    config = current_app.config
    if consent is None:
        consent = extension.browse_allowed()
    company_id = config["KLAVIYO_PUBLIC_API_KEY"]
    # Share mode needs the public key (company_id) and consent; otherwise residual calls drop.
    share = config["KLAVIYO_BRIDGE_MODE"] == "share" and consent and bool(company_id)
    events = []
    for event in extension.page_events():
        entry: dict[str, Any] = {"metric": event.metric, "unique_id": event.unique_id}
        if share:
            profile = share_profile(event.profile)
            if profile:
                entry["profile"] = profile
        events.append(entry)
    data: dict[str, Any] = {
        "mode": "share" if share else "drop",
        "companyId": company_id,
        "events": events,
    }
    if share:
        data["clientUrl"] = str(config["KLAVIYO_CLIENT_URL"]).rstrip("/")
        data["revision"] = config["KLAVIYO_REVISION"]
    if consent and company_id:
        who = identify_payload(extension.visitor())
        if who:
            data["identify"] = who
    if "identify" in data or (share and any(e.get("profile") for e in events)):
        g._klaviyo_personal_page = True  # a shared cache must not serve this page to others
    return data


def keep_private(response: Any) -> None:
    """The page names its visitor: no shared cache may keep it (``Cache-Control: private``,
    ``Vary: Cookie``). Set as plain headers when the view set none (most pages): Werkzeug's
    header objects cost more than the rest of the bridge."""
    headers = response.headers
    if "Cache-Control" in headers:
        response.cache_control.public = False
        response.cache_control.private = True
    else:
        headers["Cache-Control"] = "private"
    if "Vary" in headers:
        response.vary.add("Cookie")
    else:
        headers["Vary"] = "Cookie"


_json = json.JSONEncoder().encode  # json.dumps' own defaults, built once


def _blob(data: Mapping[str, Any]) -> str:
    # <, >, & and ' escaped (as Jinja's htmlsafe_json_dumps does): nothing can close the tag
    blob = (
        _json(data)
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("'", "\\u0027")
    )
    return f'<script type="application/json" id="{DATA_ELEMENT_ID}">{blob}</script>'


_INERT_BLOB = _blob(INERT)


@functools.lru_cache(maxsize=64)
def _klaviyo_js_tag(base: str, company_id: str) -> str:
    return f'<script async src="{escape(klaviyo_js_url(base, company_id))}"></script>'


MAX_SCRIPT_ROOTS = 8  # script roots remembered per app; others build the tag each time
# app -> script root -> the bridge's script tag (url_for once, not on every page)
_script_tags: weakref.WeakKeyDictionary[Flask, dict[str, str]] = weakref.WeakKeyDictionary()


def _bridge_script_tag(app: Flask) -> str:
    tags = _script_tags.get(app)
    if tags is None:
        tags = _script_tags.setdefault(app, {})
    root = request.script_root
    tag = tags.get(root)
    if tag is None:
        script = url_for("klaviyo.static", filename="klaviyo-bridge.js")
        tag = f'<script src="{escape(script)}"></script>'
        if len(tags) < MAX_SCRIPT_ROOTS:  # a proxy's prefix header is the client's to choose
            tags[root] = tag
    return tag


def render(extension: Klaviyo) -> Markup:
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    config = app.config
    if not config["KLAVIYO_ENABLED"]:
        return Markup(_INERT_BLOB)  # no scripts: a residual browser snippet works as before
    consent = extension.browse_allowed()
    data = bridge_data(extension, consent=consent)
    parts = [_blob(data), _bridge_script_tag(app)]
    company_id = data["companyId"]
    if company_id and consent:
        parts.append(_klaviyo_js_tag(config["KLAVIYO_JS_URL"], company_id))
        setattr(g, KLAVIYO_JS_LOADED, True)  # it sends Active on Site itself (onsite.py)
    return Markup("\n".join(parts))
