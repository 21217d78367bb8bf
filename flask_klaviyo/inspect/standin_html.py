"""The inspector's stand-in sections: what the local Klaviyo stand-in received and holds
(events, dedup hits, profiles, consent records, the catalog), as escaped HTML."""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from typing import Any

from markupsafe import Markup

from . import page
from .standin import StandIn

__all__ = ["person_sections", "received_table", "standin_sections"]

log = logging.getLogger(__name__)


def _unreadable(standin: StandIn) -> str:
    return (
        f"<h2>The stand-in</h2><p class=empty>Not readable: {html.escape(str(standin.error))}</p>"
    )


def received_table(events: list[dict[str, Any]]) -> str:
    """What the stand-in accepted, newest first."""
    rows = [
        [
            page.clock(e.get("received_at")),
            e.get("metric") + (" (backfill)" if e.get("backfill") else ""),
            Markup(f'<span class="mono">{html.escape(str(e.get("unique_id")))}</span>'),
            e.get("endpoint"),
            e.get("profile_id"),
            page.details(f"{len(e.get('properties') or {})} properties", e.get("properties")),
        ]
        for e in reversed(events)
    ]
    columns = ("received", "metric", "unique_id", "endpoint", "profile", "")
    return page.table(columns, rows, "Nothing received yet.")


def person_sections(standin: StandIn, linked: set[str]) -> str:
    """One person's profile, events received and consent records in the stand-in."""
    if not standin.available:
        return _unreadable(standin)
    profile = next((p for i in sorted(linked) if (p := standin.profile_for(i))), None)
    if profile is None:
        return "<h2>The stand-in</h2><p class=empty>No profile for this visitor yet.</p>"
    events = standin.events_of(profile["id"])
    mine = [s for s in standin.subscriptions if s.get("profile_id") == profile["id"]]
    return (
        f"<h2>Profile in the stand-in: {html.escape(str(profile['id']))}</h2>"
        + str(page.details("profile", profile))
        + f"<h2>Received by the stand-in ({len(events)})</h2>"
        + received_table(events)
        + "<h2>Subscriptions and consent</h2>"
        + _subscriptions(mine)
    )


def _subscriptions(rows: list[dict[str, Any]]) -> str:
    names = (
        "email",
        "phone_number",
        "list_id",
        "channel",
        "consent",
        "consented_at",
        "custom_source",
        "updated",
    )
    return page.table(
        names, [[r.get(n) for n in names] for r in reversed(rows)], "No consent recorded."
    )


def standin_sections(standin: StandIn, visitor_url: Callable[[str], str]) -> str:
    """The overview's stand-in part: dedup hits, profiles, consent, the catalog."""
    if standin.url is None:
        return (
            "<h2>Klaviyo</h2><p class=empty>Not a local stand-in: what Klaviyo holds is in "
            "Klaviyo.</p>"
        )
    if not standin.available:
        return _unreadable(standin)
    hits = [
        [
            page.clock(h.get("received_at")),
            h.get("metric"),
            h.get("unique_id"),
            h.get("endpoint"),
            standin.kept_endpoint(h["metric"], h["unique_id"], h["profile_id"]) or "?",
        ]
        for h in reversed(standin.dedup_hits)
    ]
    profiles = [
        [
            page.link(visitor_url(p["email"]), p["email"]) if p.get("email") else p.get("id"),
            p.get("phone_number"),
            ", ".join(p.get("anonymous_ids") or []),
            len(standin.events_of(p["id"])),
            p.get("updated"),
        ]
        for p in reversed(standin.profiles)
    ]
    items = [
        [i.get("id"), i.get("external_id"), i.get("title"), i.get("price"), i.get("published")]
        for i in standin.catalog_items.values()
    ]
    stats = ", ".join(f"{k} {v}" for k, v in standin.stats.items())
    return (
        f"<h2>The stand-in ({html.escape(standin.url or '')})</h2><p>{html.escape(stats)}</p>"
        "<h2>Dedup hits</h2><p>A copy with a (profile, metric, unique_id) already kept is "
        "dropped: the server's and the browser's (share mode) copies of one event.</p>"
        + page.table(
            ("at", "metric", "unique_id", "dropped copy from", "kept copy from"),
            hits,
            "No dedup hits yet.",
        )
        + "<h2>Profiles</h2>"
        + page.table(
            ("profile", "phone", "anonymous ids", "events", "updated"), profiles, "No profiles yet."
        )
        + "<h2>Subscriptions and consent</h2>"
        + _subscriptions(standin.subscriptions)
        + f"<h2>Catalog as Klaviyo holds it ({len(items)} items, "
        f"{len(standin.catalog_variants)} variants, {len(standin.catalog_categories)} "
        "categories)</h2>"
        + page.table(
            ("id", "external id", "title", "price", "published"), items, "No catalog items yet."
        )
    )
