"""The inspector's HTML: one page frame (inline CSS, one hashed inline script, a strict
Content-Security-Policy), escaped tables, and the rows of journal records and dead letters.

Every value shown is escaped; links and forms are built here from escaped parts (``Markup``).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from flask import Response
from markupsafe import Markup

__all__ = ["CSP", "SCRIPT", "clock", "frame", "record_rows", "table"]

log = logging.getLogger(__name__)

SCRIPT = (
    "document.addEventListener('DOMContentLoaded', function () {"
    " var stage = document.getElementById('stage');"
    " if (stage) { stage.addEventListener('change', function () {"
    "  document.querySelectorAll('div.chart').forEach(function (c) {"
    "   c.hidden = c.getAttribute('data-stage') !== stage.value; }); }); }"
    " var live = document.getElementById('live');"
    " if (live) {"
    "  live.checked = sessionStorage.getItem('klaviyo-inspector-live') === '1';"
    "  live.addEventListener('change', function () {"
    "   sessionStorage.setItem('klaviyo-inspector-live', live.checked ? '1' : '0'); });"
    "  setInterval(function () {"
    "   if (live.checked && !document.querySelector('details[open]')) { location.reload(); }"
    "  }, 3000); }"
    "});"
)
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'; script-src 'sha256-"
    + base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    + "'"
)
STYLE = (
    "body{font:14px system-ui,sans-serif;margin:1.2rem 1.5rem;color:#222}"
    "h1{font-size:1.3rem}h2{font-size:1.1rem;margin-top:1.6rem}"
    "table{border-collapse:collapse;width:100%}"
    "th,td{border-bottom:1px solid #ddd;padding:.3rem .45rem;text-align:left;"
    "vertical-align:top}th{background:#f5f5f5}code,.mono{font-family:ui-monospace,monospace;"
    "word-break:break-all;"
    "font-size:12px}nav a{margin-right:1rem}.empty{color:#666}.note{background:#fff8e0;"
    "border:1px solid #e8d48a;padding:.5rem .7rem}.ok{color:#22702c}.bad{color:#a4161a}"
    ".stage-parked{color:#8a5a00}.stage-released{color:#0b5cad}.stage-dead{color:#a4161a}"
    ".stage-sent{color:#22702c}.legend span{margin-right:1rem}.legend i{display:inline-block;"
    "width:.8rem;height:.8rem;margin-right:.3rem;vertical-align:middle}"
    "svg text{font-size:10px;fill:#555}form{display:inline}pre{margin:.2rem 0;font-size:12px}"
)


def clock(at: Any) -> str:
    """A unix time as HH:MM:SS UTC ('' when there is none)."""
    try:
        return datetime.fromtimestamp(float(at), UTC).strftime("%H:%M:%S")
    except (TypeError, ValueError):
        return ""


def _cell(value: Any) -> str:
    if isinstance(value, Markup):
        return f"<td>{value}</td>"
    return f"<td>{html.escape('' if value is None else str(value))}</td>"


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], empty: str) -> str:
    """An escaped table as HTML text (a ``Markup`` cell is kept as it is); ``empty`` when no
    rows. Plain ``str``: joined to other HTML text, a Markup would escape that text."""
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    if not body:
        return f"<p class=empty>{html.escape(empty)}</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def link(href: str, text: Any) -> Markup:
    return Markup(f'<a href="{html.escape(href)}">{html.escape(str(text))}</a>')


RECORD_COLUMNS = ("time", "stage", "metric / kind", "unique_id / key", "who", "anonymous id",
                  "order", "answer")  # fmt: skip


def record_rows(
    records: Iterable[Mapping[str, Any]],
    visitor_url: Callable[[str], str],
    order_url: Callable[[str], str],
) -> list[list[Any]]:
    """Journal records as table rows, with who, anonymous ids and orders linked."""
    rows = []
    for record in records:
        stage = str(record.get("stage"))
        answer = ""
        if stage == "released":
            answer = f"released to {record.get('to') or '?'}"
        elif record.get("status") is not None or record.get("error"):
            answer = " ".join(
                str(part)
                for part in (record.get("status"), record.get("endpoint"), record.get("error"))
                if part
            )
        who, anon, order = record.get("who"), record.get("anonymous_id"), record.get("order")
        rows.append(
            [
                clock(record.get("at")),
                Markup(f'<span class="stage-{html.escape(stage)}">{html.escape(stage)}</span>'),
                record.get("what"),
                Markup(f'<span class="mono">{html.escape(str(_uid(record)))}</span>'),
                link(visitor_url(who), who) if who else "",
                link(visitor_url(anon), anon) if anon else "",
                link(order_url(order), order) if order else "",
                answer,
            ]
        )
    return rows


def _uid(record: Mapping[str, Any]) -> Any:
    return record.get("unique_id") if record.get("kind") == "event" else record.get("key")


def details(summary: str, data: Any) -> Markup:
    """A collapsed JSON view."""
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    return Markup(
        f"<details><summary>{html.escape(summary)}</summary><pre>{html.escape(text)}</pre>"
        "</details>"
    )


def frame(title: str, body: str, *, nav: str = "") -> Response:
    """The page: escaped title, ``body`` (already HTML), the hashed script, strict headers."""
    page = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f'<title>{html.escape(title)}</title><link rel="icon" href="data:,">'
        f"<style>{STYLE}</style></head><body>"
        f"<nav>{nav}</nav><h1>{html.escape(title)}</h1>{body}"
        f"<script>{SCRIPT}</script></body></html>"
    )
    response = Response(page, mimetype="text/html")
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "same-origin"
    return response
