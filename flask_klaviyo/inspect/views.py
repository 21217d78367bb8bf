"""The inspector's blueprint at ``/_klaviyo/inspector``: per visitor and per order, what the
extension tracked, parked, released, sent and dead-lettered, and what the stand-in holds.

Mounted only while ``KLAVIYO_INSPECTOR`` is on (``auto``: a loopback stand-in), and every
request checks it again: a production config answers 404. The replay button is a POST with a
signed token (salt per purpose) from a same-origin page.
"""

from __future__ import annotations

import html
import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, abort, current_app, redirect, request, url_for
from itsdangerous import BadSignature, URLSafeTimedSerializer
from markupsafe import Markup
from werkzeug.wrappers import Response as BaseResponse

from .._state import current_state
from ..delivery import keys
from ..identity.visit import current_visit
from ..ops import replay_dead_letters
from . import page
from .chart import render_chart
from .journal import Journal
from .standin import StandIn, read_standin
from .standin_html import person_sections, received_table, standin_sections

__all__ = ["BLUEPRINT", "PREFIX", "inspector_blueprint"]

log = logging.getLogger(__name__)

PREFIX = "/_klaviyo/inspector"
BLUEPRINT = "klaviyo_inspector"
REPLAY_SALT = "flask-klaviyo-inspector-replay"
TOKEN_MAX_AGE = 3600
RECENT = 150  # journal records on the overview


def inspector_blueprint() -> Blueprint:
    blueprint = Blueprint(BLUEPRINT, __name__, url_prefix=PREFIX)
    blueprint.before_request(_only_when_on)
    blueprint.add_url_rule("/", "index", index)
    blueprint.add_url_rule("/visitor/<path:who>", "visitor", visitor)
    blueprint.add_url_rule("/order/<path:order_id>", "order", order)
    blueprint.add_url_rule("/replay/<record_id>", "replay", replay, methods=["POST"])
    return blueprint


def _only_when_on() -> None:
    if not current_app.config.get("KLAVIYO_ENABLED") or not current_state().inspector:
        abort(404)


def _journal() -> Journal:
    return Journal(current_state().redis)


def _visitor_url(who: str) -> str:
    return url_for("klaviyo_inspector.visitor", who=who)


def _order_url(order_id: str) -> str:
    return url_for("klaviyo_inspector.order", order_id=order_id)


def _records(records: Iterable[Mapping[str, Any]], empty: str) -> str:
    rows = page.record_rows(records, _visitor_url, _order_url)
    return page.table(page.RECORD_COLUMNS, rows, empty)


def _nav() -> str:
    standin = current_app.config["KLAVIYO_API_URL"].rstrip("/")
    return (
        f'<a href="{url_for("klaviyo_inspector.index")}">inspector</a>'
        f'<a href="{html.escape(standin)}/">the stand-in\'s own page</a>'
        '<a href="/">the site</a>'
        '<label><input type="checkbox" id="live"> refresh every 3 s</label>'
    )


def _standin(*parts: str) -> StandIn:
    api_url = current_app.config["KLAVIYO_API_URL"]
    return read_standin(api_url, parts=parts) if parts else read_standin(api_url)


# -- the overview ---------------------------------------------------------------------------------
def index() -> BaseResponse:
    journal = _journal()
    records = journal.read()
    body = [_flash(), _this_browser(), "<h2>Operations per minute</h2>"]
    body.append(render_chart(journal.per_minute()))
    body.append("<h2>Visitors</h2>" + _visitors(records))
    body.append("<h2>Orders</h2>" + _orders(records))
    body.append("<h2>Dead letters</h2>" + _dead_letters(current_state().dead_letters.all()))
    body.append(f"<h2>Latest operations ({min(len(records), RECENT)} of {len(records)})</h2>")
    body.append(_records(records[:RECENT], "Nothing tracked yet: browse the store."))
    body.append(standin_sections(_standin(), _visitor_url))
    return page.frame("Klaviyo inspector", "".join(body), nav=_nav())


def _flash() -> str:
    replayed = request.args.get("replayed")
    if replayed is None:
        return ""
    return f'<p class="note">Replayed: {html.escape(replayed)} queued again.</p>'


def _this_browser() -> str:
    """Who this browser is to the store (its signed cookie), and what waits for it."""
    visit = current_visit()
    who = next((visit.profile[k] for k in ("email", "phone_number") if visit.profile.get(k)), None)
    parked = _parked(visit.anonymous_id) if visit.anonymous_id else []
    if who:
        text = f"This browser is known as {page.link(_visitor_url(who), who)}"
    elif visit.anonymous_id:
        anon = visit.anonymous_id
        text = f"This browser is anonymous visitor {page.link(_visitor_url(anon), anon)}"
    else:
        return "<p>This browser has no visitor id yet (nothing tracked for it).</p>"
    if parked:
        text += (
            f": <strong>{len(parked)} event(s) parked</strong>, waiting for an email or phone "
            "number (Klaviyo would make an orphan profile of them); they are released to the "
            "profile when the shopper gives one"
        )
    return f'<p class="note">{text}.</p>'


def _parked(anonymous_id: str) -> list[dict[str, Any]]:
    """A visitor's events waiting now, oldest first."""
    raw = current_state().redis.lrange(keys.PARKED_PREFIX + anonymous_id, 0, -1)
    return [json.loads(item) for item in raw]


def _visitors(records: list[dict[str, Any]]) -> str:
    seen: dict[str, dict[str, Any]] = {}
    for record in records:  # newest first
        for who in {record.get("who"), record.get("anonymous_id")} - {None}:
            entry = seen.setdefault(str(who), {"last": record["at"], "stages": Counter()})
            entry["stages"][record["stage"]] += 1
            if record.get("stage") == "released" and record.get("to"):
                entry["to"] = record["to"]
    waiting = {
        k.decode(): int(v) for k, v in current_state().redis.hgetall(keys.PARKED_COUNTS).items()
    }
    for anon in waiting:
        seen.setdefault(anon, {"last": None, "stages": Counter()})
    rows = [
        [
            page.link(_visitor_url(who), who),
            page.clock(entry["last"]),
            waiting.get(who, 0),
            entry.get("to", ""),
            ", ".join(f"{stage} {n}" for stage, n in sorted(entry["stages"].items())),
        ]
        for who, entry in list(seen.items())[:100]
    ]
    columns = ("visitor", "last seen", "parked now", "released to", "operations")
    return page.table(columns, rows, "No visitors yet.")


def _orders(records: list[dict[str, Any]]) -> str:
    orders: dict[str, Counter[str]] = {}
    for record in records:
        if record.get("order"):
            orders.setdefault(str(record["order"]), Counter())[str(record.get("what"))] += 1
    rows = [
        [page.link(_order_url(o), o), ", ".join(f"{m} ({n})" for m, n in c.items())]
        for o, c in orders.items()
    ]
    return page.table(("order", "events"), rows, "No orders yet.")


def _dead_letters(letters: list[dict[str, Any]]) -> str:
    signer = _signer()
    rows = []
    for letter in reversed(letters):
        entry = letter.get("event") or letter.get("operation") or {}
        what = entry.get("metric") or entry.get("op")
        errors = "; ".join(
            " ".join(str(e.get(k)) for k in ("detail", "pointer") if e.get(k))
            + (f" ({e['source']['pointer']})" if isinstance(e.get("source"), dict) else "")
            for e in letter.get("errors") or []
        )
        token = signer.dumps(letter["id"])
        action = url_for(".replay", record_id=letter["id"])
        button = Markup(
            f'<form method="post" action="{html.escape(action)}">'
            f'<input type="hidden" name="token" value="{html.escape(token)}">'
            f'<input type="hidden" name="next" value="{html.escape(request.path)}">'
            f'<button type="submit" data-letter="{html.escape(letter["id"])}">replay</button>'
            "</form>"
        )
        rows.append(
            [
                page.clock(letter.get("dead_at")),
                what,
                letter.get("reason"),
                letter.get("status"),
                errors,
                page.details("entry", entry),
                button,
            ]
        )
    columns = ("dead at", "metric / kind", "reason", "status", "Klaviyo's error", "", "")
    return page.table(columns, rows, "No dead letters.")


def _signer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=REPLAY_SALT)


# -- per visitor, per order -------------------------------------------------------------------
def _people(records: list[dict[str, Any]], who: str) -> set[str]:
    """``who`` and the ids linked to it: anonymous ids released to a person (or sent with
    their events), the person an anonymous id was released to."""
    linked = {who}
    for _ in range(2):  # an anonymous id -> its person -> their other anonymous ids
        for record in records:
            ids = {record.get("who"), record.get("to"), record.get("anonymous_id")} - {None, ""}
            if ids & linked:
                linked |= {str(i) for i in ids}
    return linked


def visitor(who: str) -> BaseResponse:
    records = _journal().read()
    linked = _people(records, who)
    mine = [r for r in records if {r.get("who"), r.get("to"), r.get("anonymous_id")} & linked]
    body = [_flash()]
    body += [f"<p>Also known as: {', '.join(html.escape(i) for i in sorted(linked - {who}))}</p>"
            if linked - {who} else ""]  # fmt: skip
    for anon in sorted(linked):
        parked = _parked(anon) if "@" not in anon else []
        if parked:
            rows = [[e.get("time"), e.get("metric"), e.get("unique_id")] for e in parked]
            body.append(
                f"<h2>Parked now for {html.escape(anon)} ({len(parked)})</h2>"
                '<p class="note">Waiting for the visitor to give an email or phone number; '
                "then released, with their original time, to that profile.</p>"
                + page.table(("time", "metric", "unique_id"), rows, "")
            )
    body.append("<h2>What the store did</h2>")
    body.append(_records(mine, "Nothing tracked for this visitor yet."))
    dead = [d for d in current_state().dead_letters.all() if _mentions(d, linked)]
    body.append("<h2>Dead letters</h2>" + _dead_letters(dead))
    standin = _standin()
    if standin.url is not None:
        body.append(person_sections(standin, linked))
    return page.frame(f"Visitor {who}", "".join(body), nav=_nav())


def _mentions(letter: Mapping[str, Any], ids: set[str]) -> bool:
    entry = letter.get("event") or letter.get("operation") or {}
    profile = entry.get("profile") or {}
    values = {str(v) for v in profile.values() if isinstance(v, str)}
    values |= set(str(entry.get("key") or "").split(" "))
    return bool(values & ids)


def order(order_id: str) -> BaseResponse:
    records = [r for r in _journal().read() if str(r.get("order")) == order_id]
    body = ["<h2>What the store did</h2>", _records(records, "Nothing tracked for this order.")]
    dead = [
        d
        for d in current_state().dead_letters.all()
        if str(((d.get("event") or {}).get("properties") or {}).get("OrderId")) == order_id
    ]
    body.append("<h2>Dead letters</h2>" + _dead_letters(dead))
    standin = _standin("events")
    if standin.url is not None:
        received = standin.events_of_order(order_id)
        body.append(f"<h2>Received by the stand-in ({len(received)})</h2>")
        body.append(received_table(received))
    return page.frame(f"Order {order_id}", "".join(body), nav=_nav())


# -- replay -----------------------------------------------------------------------------------
def replay(record_id: str) -> BaseResponse:
    """Queue one dead letter again (``ops.replay_dead_letters``): a signed token and a
    same-origin request, so another site cannot make a browser press the button."""
    site = request.headers.get("Sec-Fetch-Site")
    origin = request.headers.get("Origin")
    if site not in (None, "same-origin") or (
        origin is not None and origin.rstrip("/") != request.host_url.rstrip("/")
    ):
        abort(403)
    try:
        signed = _signer().loads(request.form.get("token", ""), max_age=TOKEN_MAX_AGE)
    except BadSignature:
        abort(403)
    if signed != record_id:
        abort(403)
    state = current_state()
    letter = next((d for d in state.dead_letters.all() if d["id"] == record_id), None)
    if letter is None:
        abort(404)
    report = replay_dead_letters(state.dead_letters, state.outbox, record_id=record_id)
    entry = letter.get("event") or letter.get("operation") or {}
    if report.requeued:
        _journal().write([Journal.record("replayed", entry)])
    outcome = (
        "1 dead letter"
        if report.requeued
        else "nothing (" + "; ".join(report.still_invalid or ["skipped"]) + ")"
    )
    target = request.form.get("next", "")
    if not target.startswith(PREFIX):
        target = url_for(".index")
    return redirect(f"{target}?{urlencode({'replayed': outcome})}", code=303)
