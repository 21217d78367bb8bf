"""Active on Site from the server, for pages where klaviyo.js (which sends its own) does not
load.

Once per visit: the unique_id is ``stable_id("Active on Site", visit id)``, so however many
pages of one visit send it, Klaviyo keeps one. The properties stay what klaviyo.js's own event
carries that the server knows: ``page``, the page's absolute URL, when given (validation
refuses a relative or non-http(s) one). A URL anyone can make megabytes long is bounded: over
``MAX_PAGE_URL`` characters it loses its query string, and is left out if still too long, so a
crafted link never makes the visit's event invalid.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..exceptions import KlaviyoSchemaError
from .ids import stable_id
from .model import ACTIVE_ON_SITE, Event, _describe
from .values import _event_time, _known, _profile

__all__ = ["MAX_PAGE_URL", "active_on_site"]

MAX_PAGE_URL = 2048  # characters: what browsers and most servers keep of a URL anyway


def _page(page_url: str | None) -> str | None:
    """``page_url``, bounded: without its query when too long; None when still too long."""
    if not isinstance(page_url, str) or len(page_url) <= MAX_PAGE_URL:
        return page_url  # validation has its say on anything else
    try:
        parts = urlsplit(page_url)
    except ValueError:
        return None
    short = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    return short if len(short) <= MAX_PAGE_URL else None


def _visit_id(visit_id: Any) -> str:
    if isinstance(visit_id, int) and not isinstance(visit_id, bool):
        return str(visit_id)
    if isinstance(visit_id, str) and visit_id.strip():
        return visit_id
    if visit_id is None or visit_id == "":
        raise KlaviyoSchemaError(
            ACTIVE_ON_SITE, "visit_id", f"required for {ACTIVE_ON_SITE} (its unique_id)"
        )
    raise KlaviyoSchemaError(
        ACTIVE_ON_SITE,
        "visit_id",
        f"must be a non-empty string or an integer, got {_describe(visit_id)}",
    )


def active_on_site(
    profile: Mapping[str, Any] | None,
    *,
    visit_id: Any,
    page_url: str | None = None,
    time: datetime | None = None,
) -> Event:
    """Active on Site for one visit (``page``: the URL of the page it was seen on, absolute)."""
    visit = _visit_id(visit_id)
    return Event(
        metric=ACTIVE_ON_SITE,
        properties=_known({"page": _page(page_url)}),
        profile=_profile(profile),
        time=_event_time(ACTIVE_ON_SITE, time),
        unique_id=stable_id(ACTIVE_ON_SITE, visit),
    )
