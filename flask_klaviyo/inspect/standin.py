"""What the local Klaviyo stand-in holds, read over its ``/_fake/*`` routes for the inspector:
events received, profiles, consent records, the catalog and dedup hits.

Only a loopback API URL is read (never a real Klaviyo), with a short timeout: a stand-in that
is down or slow leaves its sections empty with the reason, never a broken inspector.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import httpx

from .journal import is_loopback_url

__all__ = ["StandIn", "read_standin"]

log = logging.getLogger(__name__)

TIMEOUT = 2.0
ROUTES = {
    "events": "events",
    "profiles": "profiles",
    "subscriptions": "subscriptions",
    "catalog_items": "catalog-items",
    "catalog_variants": "catalog-variants",
    "catalog_categories": "catalog-categories",
    "dedup_hits": "dedup-hits",
    "stats": "stats",
}


@dataclass
class StandIn:
    """The stand-in's state (each part as its route answers), or why it could not be read."""

    url: str | None = None
    error: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    profiles: list[dict[str, Any]] = field(default_factory=list)
    subscriptions: list[dict[str, Any]] = field(default_factory=list)
    catalog_items: dict[str, Any] = field(default_factory=dict)
    catalog_variants: dict[str, Any] = field(default_factory=dict)
    catalog_categories: dict[str, Any] = field(default_factory=dict)
    dedup_hits: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def available(self) -> bool:
        return self.url is not None and self.error is None

    def profile_for(self, who: str) -> dict[str, Any] | None:
        """The profile with this email, phone number, external id or anonymous id."""
        wanted = who.strip().lower()
        for profile in self.profiles:
            values = [profile.get(k) for k in ("email", "phone_number", "external_id")]
            values += profile.get("anonymous_ids") or []
            if any(str(v).lower() == wanted for v in values if v):
                return profile
        return None

    def events_of(self, profile_id: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event.get("profile_id") == profile_id]

    def events_of_order(self, order_id: str) -> list[dict[str, Any]]:
        return [
            event
            for event in self.events
            if str((event.get("properties") or {}).get("OrderId")) == order_id
        ]

    def kept_endpoint(self, metric: str, unique_id: str, profile_id: str) -> str | None:
        """The endpoint of the copy the stand-in kept (the first one to arrive)."""
        for event in self.events:
            if (event.get("metric"), event.get("unique_id"), event.get("profile_id")) == (
                metric,
                unique_id,
                profile_id,
            ):
                return str(event.get("endpoint"))
        return None


def read_standin(api_url: str, *, parts: tuple[str, ...] = tuple(ROUTES)) -> StandIn:
    """Read ``parts`` of the stand-in at ``api_url``; a URL that is not loopback reads nothing."""
    if not is_loopback_url(api_url):
        return StandIn()
    found = StandIn(url=api_url.rstrip("/"))
    try:
        with httpx.Client(base_url=found.url, timeout=TIMEOUT) as client:
            for part in parts:
                answer = client.get(f"/_fake/{ROUTES[part]}")
                if answer.status_code != 200:
                    raise ValueError(f"GET /_fake/{ROUTES[part]} answered {answer.status_code}")
                setattr(found, part, answer.json())
    except (httpx.HTTPError, ValueError) as exc:
        log.info("klaviyo: the stand-in at %s could not be read: %s", found.url, exc)
        found.error = f"{type(exc).__name__}: {exc}"
    return found
