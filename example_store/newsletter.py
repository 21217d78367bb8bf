"""Newsletter signup: ``POST /newsletter`` (the footer form on every page) and the signups other
forms make (the "email me offers" box at checkout, ``newsletter=yes`` at registration).

Consent is explicit and per channel: nobody is subscribed without ``consent=yes`` (a ticked
box, never pre-ticked); texts also need ``sms_consent=yes`` and a phone number the store can
write in E.164. Each signup is recorded in ``newsletter_signups`` (what was agreed to, where,
when) and handed to ``klaviyo.subscribe`` for ``STORE_NEWSLETTER_LIST_ID``. Klaviyo applies
the list's double opt-in: then the shopper is told to check their inbox (``confirmation_sent``).
The same signup submitted again within ``RESUBMIT_WINDOW`` seconds (a double click, a reload)
answers as the first one did and queues nothing more.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, current_app, flash, redirect, render_template
from werkzeug.wrappers import Response

from .db import transaction
from .extensions import klaviyo
from .http import back, json_error, request_data, wants_json
from .validation import FieldError, FormErrors, clean_email, clean_phone, is_yes, storable

__all__ = [
    "DEFAULT_LIST_ID",
    "NO_CONSENT",
    "RESUBMIT_WINDOW",
    "Signup",
    "bp",
    "parse_signup",
    "status_message",
    "subscribe",
]

DEFAULT_LIST_ID = "NEWSLTR"  # STORE_NEWSLETTER_LIST_ID; the stand-in accepts any list id
RESUBMIT_WINDOW = 600.0  # seconds in which the same signup again is a double submit
NO_CONSENT = "no_consent"
STATUSES = ("subscribed", "confirmation_sent")
FOOTER_SOURCE = "Footer newsletter form"
MAX_ECHO = 254  # characters of a refused field shown back in the form

bp = Blueprint("newsletter", __name__)


@dataclass(frozen=True)
class Signup:
    """Who agreed to what: an email for email marketing; a phone number only with SMS consent."""

    email: str
    phone_number: str | None = None

    @property
    def channels(self) -> tuple[str, ...]:
        return ("email", "sms") if self.phone_number else ("email",)


def parse_signup(data: dict[str, Any]) -> Signup | None:
    """The signup a form asks for; None without ``consent=yes`` (nobody is subscribed).

    Raises ``FormErrors`` for a missing or malformed email, a malformed phone number, or SMS
    consent without a phone number, whether or not the box was ticked: bad input is refused.
    """
    errors: dict[str, str] = {}
    email = phone = None
    try:
        email = clean_email(data.get("email"))
    except FieldError as exc:
        errors[exc.field] = exc.message
    try:
        phone = clean_phone(data.get("phone_number"))
    except FieldError as exc:
        errors[exc.field] = exc.message
    sms = is_yes(data.get("sms_consent"))
    if sms and phone is None and "phone_number" not in errors:
        errors["phone_number"] = "To get texts, please enter your mobile number."
    if errors:
        raise FormErrors(errors)
    assert email is not None
    if not is_yes(data.get("consent")):
        return None
    return Signup(email=email, phone_number=phone if sms else None)


def _list_id() -> str:
    return str(current_app.config.get("STORE_NEWSLETTER_LIST_ID") or DEFAULT_LIST_ID)


def _recent_status(db: Any, list_id: str, signup: Signup, now: float) -> str | None:
    row = db.execute(
        "SELECT status FROM newsletter_signups WHERE list_id = ? AND email = ?"
        " AND phone_number IS ? AND channels = ? AND consented_ts > ?"
        " ORDER BY consented_ts DESC LIMIT 1",
        (
            list_id,
            signup.email,
            signup.phone_number,
            ",".join(signup.channels),
            now - RESUBMIT_WINDOW,
        ),
    ).fetchone()
    return row["status"] if row is not None else None


def subscribe(signup: Signup, *, source: str) -> str:
    """Record the consent and subscribe: ``subscribed`` or ``confirmation_sent``.

    Consent is recorded and the subscription queued in one transaction, so two submits racing
    each other still queue one subscription.
    """
    list_id = _list_id()
    now = time.time()
    with transaction() as db:
        earlier = _recent_status(db, list_id, signup, now)
        if earlier is not None:
            return earlier
        # consented_at stays unset: the library stamps "now". A time given here would be a
        # moment in the past by the time it is checked: a historical import.
        result = klaviyo.subscribe(
            email=signup.email,
            phone_number=signup.phone_number,
            list_id=list_id,
            channels=signup.channels,
            source=source,
        )
        status = getattr(result, "status", None)
        if status not in STATUSES:
            status = "confirmation_sent"  # tracking off: Klaviyo's default is double opt-in
        db.execute(
            "INSERT INTO newsletter_signups (list_id, email, phone_number, channels, source,"
            " status, consented_at, consented_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                list_id,
                signup.email,
                signup.phone_number,
                ",".join(signup.channels),
                source,
                status,
                datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
                now,
            ),
        )
    return status


def status_message(status: str, signup: Signup | None) -> str:
    """What the shopper is told, for each answer."""
    if status == NO_CONSENT or signup is None:
        return (
            "We didn't sign you up: tick \u201cEmail me news and offers\u201d to agree to our "
            "emails. We only send them to shoppers who asked."
        )
    texts = f" and texts to {signup.phone_number}" if signup.phone_number else ""
    if status == "subscribed":
        return f"Thanks! {signup.email} will get our news and offers{texts}."
    message = f"Almost there: we sent a confirmation to {signup.email}. Confirm it to subscribe."
    if signup.phone_number:
        message += f" We'll also text {signup.phone_number}: reply to confirm texts."
    return message


def _form_page(data: dict[str, Any], errors: dict[str, str]) -> str:
    """The signup form on its own page, with what the shopper typed and what was wrong."""
    values = {
        key: value[:MAX_ECHO]
        for key in ("email", "phone_number")
        if storable(value := data.get(key))
    }
    ticked = {key for key in ("consent", "sms_consent") if is_yes(data.get(key))}
    return render_template("newsletter.html", errors=errors, values=values, ticked=ticked)


@bp.get("/newsletter")
def form() -> str:
    return _form_page({}, {})


@bp.post("/newsletter")
def signup() -> Response | tuple[Any, int]:
    """Subscribe (with consent) and go back where the form was, with a message; a JSON client
    gets 202 ``{"status": "subscribed" | "confirmation_sent" | "no_consent"}``."""
    data = request_data()
    try:
        wanted = parse_signup(data)
    except FormErrors as exc:
        if wants_json():
            return json_error(400, "invalid_form", exc.message, fields=exc.errors)
        return _form_page(data, exc.errors), 400
    status = NO_CONSENT if wanted is None else subscribe(wanted, source=FOOTER_SOURCE)
    message = status_message(status, wanted)
    if wants_json():
        return {"status": status, "message": message}, 202
    flash(message, "error" if status == NO_CONSENT else "info")
    return redirect(back(), code=303)
