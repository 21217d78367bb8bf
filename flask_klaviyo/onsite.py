"""Active on Site from the server: once per visit of a known visitor who allows browse tracking.

klaviyo.js sends its own Active on Site, so by default (``KLAVIYO_ACTIVE_ON_SITE = "auto"``)
the server sends it only on pages where the bridge did not load klaviyo.js; ``True`` / ``False``
force it. A visit ends after 30 minutes without a page: its start and last page live in the
signed identity cookie (which needs consent anyway), the last page refreshed at most once a
minute so the cookie is not re-signed on every page. The event's unique_id is derived from the
visit, so a retry or replay is the same event.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from flask import current_app, g, request

from . import queueing
from .bridge import KLAVIYO_JS_LOADED
from .events import ACTIVE_ON_SITE, active_on_site
from .identity.rules import needs_identity
from .identity.visit import current_visit

if TYPE_CHECKING:
    from .extension import Klaviyo

__all__ = ["VISIT_GAP", "after_page"]

VISIT_GAP = 30 * 60  # seconds without a page that end a visit
SEEN_STEP = 60  # the last-page time is written back at most this often


def after_page(response: Any, extension: Klaviyo) -> None:
    """After a page is produced: start a visit (and track Active on Site) when one is due."""
    mode = current_app.config["KLAVIYO_ACTIVE_ON_SITE"]
    if mode is False or response.status_code != 200 or response.mimetype != "text/html":
        return
    if mode == "auto" and g.get(KLAVIYO_JS_LOADED):
        return  # klaviyo.js on this page sends its own
    if not extension.browse_allowed():
        return
    who = extension.visitor()
    if needs_identity(who):
        return  # an Active on Site for a stranger would be an orphan profile
    visit = current_visit()
    now = int(time.time())
    if visit.started is not None and visit.seen is not None and now - visit.seen <= VISIT_GAP:
        if now - visit.seen >= SEEN_STEP:
            visit.seen = now
            visit.changed = True
        return
    # A browser that keeps no cookie starts a "visit" on every page: its visit is the 30-minute
    # slot instead, so Klaviyo keeps one Active on Site per slot (the unique_id repeats).
    remembered = visit.started is not None
    visit.started = visit.seen = now
    visit.changed = True
    start = now if remembered or visit.anonymous_id else now - now % VISIT_GAP
    person = who.get("email") or who.get("phone_number") or who.get("_kx") or who.get("id")
    visit_id = f"{person}:{start}"
    event = queueing.build(
        ACTIVE_ON_SITE, lambda: active_on_site(who, visit_id=visit_id, page_url=request.url)
    )
    if event is not None:
        queueing.submit(event)
