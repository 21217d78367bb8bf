"""The HTML inspector at ``/``: what Klaviyo would have received, newest first.

Everything shown is escaped; the page's one script (a reload every two seconds unless a row is
open) is allowed by its hash in a strict Content-Security-Policy.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import html
import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from . import inspector_catalog
from ._config import INSPECTOR_ROWS
from .jsonapi import Answer, iso

if TYPE_CHECKING:
    from .fake import FakeKlaviyo

log = logging.getLogger(__name__)

SCRIPT = (
    "setInterval(function () {"
    " if (!document.querySelector('details[open]')) { location.reload(); } }, 2000);"
)
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
    "script-src 'sha256-"
    + base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    + "'"
)
STYLE = (
    "body{font:14px system-ui,sans-serif;margin:1.5rem;color:#222}"
    "h2{font-size:1.1rem;margin-top:1.6rem}"
    "table{border-collapse:collapse;width:100%}"
    "th,td{border-bottom:1px solid #ddd;padding:.35rem .5rem;text-align:left;"
    "vertical-align:top}th{background:#f5f5f5}pre{margin:.3rem 0;font-size:12px}"
    ".counts span{margin-right:1.2rem}code{background:#f2f2f2;padding:0 .2rem}"
)


PROFILE_COLUMNS = ("id", "email", "phone_number", "external_id", "name", "events", "updated")
SUBSCRIPTION_COLUMNS = (
    "email",
    "phone_number",
    "list",
    "channel",
    "consent",
    "consented_at",
    "historical",
    "source",
    "global",
    "updated",
)
SUBSCRIPTION_KEYS = (
    "email",
    "phone_number",
    "list_id",
    "channel",
    "consent",
    "consented_at",
    "historical_import",
    "custom_source",
    "global",
    "updated",
)


def _profile_rows(fake: FakeKlaviyo) -> list[list[Any]]:
    """Newest profiles first, with how many accepted events each has (caller holds the lock)."""
    state = fake.state
    counts: dict[str, int] = {}
    for event in state.events:
        counts[event["profile_id"]] = counts.get(event["profile_id"], 0) + 1
    rows = []
    for profile in reversed(state.profiles.ordered()[-INSPECTOR_ROWS:]):
        names = (profile.attributes.get(key) for key in ("first_name", "last_name"))
        rows.append(
            [
                profile.id,
                profile.email,
                profile.phone_number,
                profile.external_id,
                " ".join(str(name) for name in names if name),
                counts.get(profile.id, 0),
                iso(profile.updated),
            ]
        )
    return rows


def _table(columns: tuple[str, ...], rows: list[list[Any]], empty: str) -> str:
    """An escaped HTML table (None shows as an empty cell)."""
    if not rows:
        return f"<p class=empty>{html.escape(empty)}</p>"
    head = "".join(f"<th>{html.escape(column)}</th>" for column in columns)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape('' if cell is None else str(cell))}</td>" for cell in row)
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render(fake: FakeKlaviyo) -> Answer:
    state = fake.state
    with state.lock:
        recent = copy.deepcopy(state.events[-INSPECTOR_ROWS:])
        stats = fake.stats()
        store = state.profiles
        labels = [store.label(store.profiles.get(e["profile_id"]), e["profile"]) for e in recent]
        others = [
            ("profiles", len(store.profiles)),
            ("consent records", len(state.subscriptions.records)),
            ("deletions", len(state.deletions)),
            ("catalog items", len(state.catalog)),
            ("variants", len(state.catalog_variants)),
            ("categories", len(state.catalog_categories)),
            ("back-in-stock", len(state.back_in_stock)),
            ("bulk jobs", len(state.jobs.jobs)),
        ]
        profiles = _profile_rows(fake)
        catalog = inspector_catalog.render(state)
    subscriptions = fake.subscriptions()[-INSPECTOR_ROWS:]
    rows = []
    for event, label in zip(reversed(recent), reversed(labels), strict=True):
        value = "" if event["value"] is None else f"{event['value']} "
        value += event["value_currency"] or ""
        props = json.dumps(event["properties"], indent=2, ensure_ascii=False, default=str)
        received = datetime.fromtimestamp(event["received_at"], UTC).strftime("%H:%M:%S")
        flags = " (backfill)" if event["backfill"] else ""
        cells = [
            received,
            event["time"] or "",
            event["metric"] + flags,
            label,
            value,
            event["unique_id"],
            event["endpoint"],
        ]
        tds = "".join(f"<td>{html.escape(str(cell))}</td>" for cell in cells)
        rows.append(
            f"<tr>{tds}<td><details><summary>{len(event['properties'])} properties"
            f"</summary><pre>{html.escape(props)}</pre></details></td></tr>"
        )
    table = (
        "<table><thead><tr><th>received (UTC)</th><th>time</th><th>metric</th>"
        "<th>profile</th><th>value</th><th>unique_id</th><th>endpoint</th>"
        "<th>properties</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
        if rows
        else "<p class=empty>No events yet. A visitor's events wait in the store, parked, "
        "until they give an email: the store's inspector (<code>/_klaviyo/inspector</code> on "
        "the store) shows them.</p>"
    )
    counts = "".join(
        f"<span>{html.escape(name)}: <strong>{number}</strong></span> "
        for name, number in (
            ("accepted", stats["accepted"]),
            ("duplicates", stats["duplicates"]),
            ("rejected requests", stats["rejected"]),
            ("requests", stats["requests"]),
            *others,
        )
    )
    page = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>Klaviyo stand-in</title><style>{STYLE}</style></head><body>"
        "<h1>Klaviyo stand-in</h1>"
        f"<p class=counts>{counts}</p>"
        f"<p>What Klaviyo would have received at <code>{html.escape(fake.link_base)}</code> "
        f"(company_id <code>{html.escape(fake.company_id)}</code>), newest first. JSON: "
        "<code>/_fake/events</code>, <code>/_fake/requests</code>, "
        "<code>/_fake/profiles</code>, <code>/_fake/subscriptions</code>, "
        "<code>/_fake/deletions</code>, <code>/_fake/catalog-items</code>, "
        "<code>/_fake/catalog-variants</code>, <code>/_fake/catalog-categories</code>, "
        "<code>/_fake/back-in-stock</code>, <code>/_fake/jobs</code>.</p>"
        f"<h2>Events</h2>{table}"
        "<h2>Profiles</h2>"
        + _table(PROFILE_COLUMNS, profiles, "No profiles yet.")
        + "<h2>Subscriptions</h2>"
        + _table(
            SUBSCRIPTION_COLUMNS,
            [[row.get(key) for key in SUBSCRIPTION_KEYS] for row in reversed(subscriptions)],
            "No consent recorded yet.",
        )
        + catalog
        + f"<script>{SCRIPT}</script></body></html>"
    )
    headers = [
        ("Content-Type", "text/html; charset=utf-8"),
        ("Content-Security-Policy", CSP),
        ("X-Content-Type-Options", "nosniff"),
        ("Cache-Control", "no-store"),
    ]
    return Answer(200, page.encode(), headers)
