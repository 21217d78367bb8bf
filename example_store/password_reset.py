"""Password resets: ask for a link, follow it, set a new password.

- ``POST /account/password-reset`` (``email``): for an account with that email, Reset Password
  goes to Klaviyo with ``PasswordResetLink`` (absolute) under the account's email; a flow sends
  the email. An unknown email gets exactly the same answer: the form says nothing about who has
  an account.
- ``GET /account/reset/<token>``: the new-password form (the link is checked, not used up).
- ``POST /account/reset/<token>`` (``password``): sets it, logs the browser in, and sends
  Updated Account (``Password Update``). The token names the account's reset nonce, which
  changes here: the link cannot be used again, nor any older one. Expired, forged or used
  links are refused with a clear message (400) and a way to ask for a new one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, flash, redirect, render_template, url_for
from werkzeug.wrappers import Response

from . import accounts
from .account_views import log_in
from .accounts import ResetTokenError
from .db import transaction
from .extensions import klaviyo
from .http import json_error, request_data, wants_json
from .validation import FieldError, clean_email, clean_password

__all__ = ["bp"]

bp = Blueprint("password", __name__, url_prefix="/account")

PASSWORD_UPDATE = "Password Update"
SENT = (
    "If an account uses {email}, we've sent it a link to reset the password."
    " The link works for {minutes} minutes, once."
)
REFUSED = {
    "expired": "This reset link has expired. Ask for a new one below.",
    "used": "This reset link has already been used. Ask for a new one below.",
    "invalid": "This reset link isn't valid. Ask for a new one below.",
    "malformed": "This reset link isn't valid. Ask for a new one below.",
}

Answer = Response | tuple[Any, int] | str


def _no_referrer(response: Any) -> Any:
    """A page whose URL holds a token tells no other site about it.

    ``same-origin``, not ``no-referrer``: under ``no-referrer`` Chromium sends ``Origin: null``
    with the page's own form post, which the store's same-origin check refuses (403)."""
    if isinstance(response, tuple):
        body, status = response
        response = Response(body, status=status, mimetype="text/html")
    if isinstance(response, str):
        response = Response(response, mimetype="text/html")
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def _minutes() -> int:
    return max(1, accounts.reset_max_age() // 60)


@bp.get("/password-reset")
def request_form() -> str:
    return render_template("password_reset.html", errors={}, values={})


@bp.post("/password-reset")
def request_link() -> Answer:
    data = request_data()
    try:
        email = clean_email(data.get("email"))
    except FieldError as exc:
        if wants_json():
            return json_error(400, "invalid_email", exc.message, fields={"email": exc.message})
        raw = data.get("email")
        values = {"email": raw[:254]} if isinstance(raw, str) else {}
        page = render_template("password_reset.html", errors={"email": exc.message}, values=values)
        return page, 400
    account = accounts.find_by_email(email)
    if account is not None:
        token = accounts.reset_token(account)
        link = url_for("password.reset_form", token=token, _external=True)
        klaviyo.password_reset(link, profile={"email": account.email})
    message = SENT.format(email=email, minutes=_minutes())
    if wants_json():
        return {"status": "sent", "message": message}, 202
    flash(message, "info")
    return redirect(url_for("password.request_form"), code=303)


def _invalid_link(reason: str) -> Answer:
    message = REFUSED.get(reason, REFUSED["invalid"])
    if wants_json():
        return json_error(400, f"reset_link_{reason}", message)
    return _no_referrer(
        (render_template("password_reset.html", errors={}, values={}, link_error=message), 400)
    )


@bp.get("/reset/<token>")
def reset_form(token: str) -> Answer:
    try:
        accounts.verify_reset_token(token)
    except ResetTokenError as exc:
        return _invalid_link(str(exc))
    return _no_referrer(render_template("password_new.html", token=token, errors={}))


@bp.post("/reset/<token>")
def reset(token: str) -> Answer:
    data = request_data()
    password: str | None = None
    error = reason = ""
    try:
        password = clean_password(data.get("password"))
    except FieldError as exc:
        error = exc.message
    with transaction() as db:
        # Checked inside the write lock: two submits of one link cannot both pass.
        try:
            account = accounts.verify_reset_token(token)
        except ResetTokenError as exc:
            reason = str(exc)
            account = None
        if account is not None and password is not None:
            accounts.set_password(db, account.id, password)
    if account is None:
        return _invalid_link(reason)
    if password is None:
        if wants_json():
            return json_error(400, "invalid_password", error, fields={"password": error})
        page = render_template("password_new.html", token=token, errors={"password": error})
        return _no_referrer((page, 400))
    log_in(account)
    klaviyo.identify(**account.profile())
    klaviyo.account_updated(
        account.id,
        update_type=PASSWORD_UPDATE,
        new_values={"PasswordChangedAt": datetime.now(UTC).isoformat(timespec="seconds")},
        profile=account.profile(),
    )
    message = "Your new password is set, and you're logged in."
    if wants_json():
        return {"status": "password_set", "message": message}, 200
    flash(message, "info")
    return redirect(url_for("account.home"), code=303)
