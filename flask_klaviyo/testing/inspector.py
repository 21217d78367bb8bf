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
from typing import TYPE_CHECKING

from ._config import INSPECTOR_ROWS
from .jsonapi import Answer

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
    "table{border-collapse:collapse;width:100%}"
    "th,td{border-bottom:1px solid #ddd;padding:.35rem .5rem;text-align:left;"
    "vertical-align:top}th{background:#f5f5f5}pre{margin:.3rem 0;font-size:12px}"
    ".counts span{margin-right:1.2rem}code{background:#f2f2f2;padding:0 .2rem}"
)


def render(fake: FakeKlaviyo) -> Answer:
    state = fake.state
    with state.lock:
        recent = copy.deepcopy(state.events[-INSPECTOR_ROWS:])
        stats = fake.stats()
        store = state.profiles
        labels = [store.label(store.profiles.get(e["profile_id"]), e["profile"]) for e in recent]
        others = [("catalog items", len(state.catalog)), ("bulk jobs", len(state.jobs.jobs))]
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
        else "<p class=empty>No events yet.</p>"
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
        "<code>/_fake/catalog-items</code>, <code>/_fake/jobs</code>.</p>"
        f"{table}<script>{SCRIPT}</script></body></html>"
    )
    headers = [
        ("Content-Type", "text/html; charset=utf-8"),
        ("Content-Security-Policy", CSP),
        ("X-Content-Type-Options", "nosniff"),
        ("Cache-Control", "no-store"),
    ]
    return Answer(200, page.encode(), headers)
